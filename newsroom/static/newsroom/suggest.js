/* The "Suggested entities" panel on the article form.
 *
 * While the editor writes, it posts the title and the CKEditor body to the
 * suggest-entities endpoint (debounced) and lists what comes back: known
 * entities with an "Add" button that fills a row of the tags inline, role
 * prefilled; new names with a "Create" link to the entity form, name and kind
 * prefilled. Nothing is tagged until the editor clicks and saves.
 */
(function () {
  "use strict";

  var DELAY = 600; // ms of quiet typing before asking the server

  function ready(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn);
    } else {
      fn();
    }
  }

  ready(function () {
    var panel = document.getElementById("entity-suggestions");
    var title = document.getElementById("id_title");
    var body = document.getElementById("id_body");
    if (!panel || !title || !body) return;
    var form = panel.closest("form");
    var group = document.getElementById("tags-group");
    var timer = null;
    var pending = null;
    var lastSent = null;
    var last = null;

    function bodyData() {
      var editor = window.CKEDITOR && window.CKEDITOR.instances[body.id];
      return editor ? editor.getData() : body.value;
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, DELAY);
    }

    function status(text) {
      panel.querySelector(".suggestions-status").textContent = text;
    }

    function refresh() {
      var data = new URLSearchParams({ title: title.value, body: bodyData() });
      var key = data.toString();
      if (key === lastSent) return;
      lastSent = key;
      if (pending) pending.abort(); // only the latest text matters
      pending = new AbortController();
      fetch(panel.dataset.url, {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value },
        signal: pending.signal,
      })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (result) {
          last = result;
          render();
        })
        .catch(function (error) {
          if (error.name === "AbortError") return;
          lastSent = null;
          status("Suggestions are unavailable just now (" + error.message + ").");
        });
    }

    // The rows of the tags inline that are in use: not the template row,
    // not marked for deletion.
    function rows() {
      if (!group) return [];
      return Array.prototype.filter.call(
        group.querySelectorAll(".form-row, .inline-related"),
        function (row) {
          return !row.classList.contains("empty-form") && row.querySelector("select[name$='-entity']");
        }
      );
    }

    function taggedIds() {
      var ids = {};
      rows().forEach(function (row) {
        var entity = row.querySelector("select[name$='-entity']");
        var remove = row.querySelector("input[name$='-DELETE']");
        if (entity.value && !(remove && remove.checked)) ids[entity.value] = true;
      });
      return ids;
    }

    function blankRow() {
      return rows().filter(function (row) {
        return !row.querySelector("select[name$='-entity']").value;
      })[0];
    }

    function tag(entity) {
      var row = blankRow();
      if (!row) {
        var add = group && group.querySelector(".add-row a");
        if (!add) return;
        add.click();
        row = blankRow();
      }
      var select = row.querySelector("select[name$='-entity']");
      select.appendChild(new Option(entity.name, entity.id, true, true));
      // The autocomplete widget (select2) redraws on jQuery's change event.
      if (window.django && window.django.jQuery) {
        window.django.jQuery(select).trigger("change");
      } else {
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
      row.querySelector("select[name$='-role']").value = entity.role;
      render();
    }

    function item(entity, detail) {
      var li = document.createElement("li");
      var name = document.createElement("strong");
      name.textContent = entity.name;
      var about = document.createElement("span");
      about.className = "detail";
      about.textContent =
        " " + entity.kind + " · " + entity.count + "× · " + detail;
      li.appendChild(name);
      li.appendChild(about);
      return li;
    }

    function render() {
      if (!last) return;
      var tagged = taggedIds();
      var known = panel.querySelector(".suggestions-known");
      var fresh = panel.querySelector(".suggestions-new");
      known.replaceChildren();
      fresh.replaceChildren();
      last.known.forEach(function (entity) {
        var li = item(entity, "suggested role: " + entity.role);
        li.dataset.entityId = entity.id;
        if (tagged[entity.id]) {
          var done = document.createElement("span");
          done.textContent = " — tagged";
          li.appendChild(done);
        } else {
          var button = document.createElement("button");
          button.type = "button";
          button.className = "button";
          button.textContent = "Add";
          button.addEventListener("click", function () {
            tag(entity);
          });
          li.appendChild(button);
        }
        known.appendChild(li);
      });
      last.new.forEach(function (candidate) {
        var li = item(candidate, "not an entity yet");
        var link = document.createElement("a");
        link.textContent = " Create";
        link.target = "_blank";
        link.rel = "noopener";
        link.href =
          panel.dataset.entityAddUrl +
          "?" +
          new URLSearchParams({ name: candidate.name, kind: candidate.kind });
        li.appendChild(link);
        fresh.appendChild(li);
      });
      status(
        last.known.length || last.new.length
          ? "Found in the title and text. Nothing is tagged until you choose."
          : "No names found yet."
      );
    }

    function watch(editor) {
      if (editor.name !== body.id) return;
      editor.on("change", schedule);
      editor.on("key", schedule);
    }

    title.addEventListener("input", schedule);
    if (window.CKEDITOR) {
      Object.keys(window.CKEDITOR.instances).forEach(function (name) {
        watch(window.CKEDITOR.instances[name]);
      });
      window.CKEDITOR.on("instanceReady", function (event) {
        watch(event.editor);
        schedule();
      });
    } else {
      body.addEventListener("input", schedule);
    }
    // Removing or changing a tag by hand updates the Add buttons.
    if (group) group.addEventListener("change", render);
    // An Entity created in another tab becomes known: ask again on return.
    window.addEventListener("focus", function () {
      lastSent = null;
      schedule();
    });
    if (title.value || body.value) schedule();
  });
})();
