/* The topic search of the subscribe and preferences pages, as you type.
 *
 * Without this script the "Find" button posts the form back and the page
 * lists what matches. With it, matches appear while the reader types and
 * the form is only sent by Subscribe or Save. Ticked boxes are kept: a
 * match the reader ticked stays in the form when the list changes.
 */
(function () {
  "use strict";
  var DELAY = 250;

  document.querySelectorAll("[data-topics]").forEach(function (fieldset) {
    var input = fieldset.querySelector("input[name=topic_q]");
    var button = fieldset.querySelector("button[name=find]");
    var list = fieldset.querySelector(".topic-choices.offered");
    var note = fieldset.querySelector("#topic-results-note");
    var url = fieldset.dataset.searchUrl;
    if (!input || !list || !url) return;
    var timer = null;
    var latest = 0;

    function chosen() {
      var keys = {};
      fieldset.querySelectorAll("input[name=topics]:checked").forEach(function (box) {
        keys[box.value] = true;
      });
      return keys;
    }

    function show(query, topics) {
      var keep = chosen();
      // Ticked offers move nowhere: keep their rows, replace the others.
      list.querySelectorAll("li").forEach(function (li) {
        var box = li.querySelector("input");
        if (!box.checked) li.remove();
      });
      var shown = 0;
      topics.forEach(function (topic) {
        if (keep[topic[0]]) return;
        var li = document.createElement("li");
        var label = document.createElement("label");
        var box = document.createElement("input");
        box.type = "checkbox";
        box.name = "topics";
        box.value = topic[0];
        label.appendChild(box);
        label.appendChild(document.createTextNode(" " + topic[1]));
        li.appendChild(label);
        list.appendChild(li);
        shown += 1;
      });
      if (note) {
        note.textContent = !query
          ? "Suggestions: tick to follow."
          : shown
          ? "Matching “" + query + "”: tick to follow, then save."
          : "Nothing more matches “" + query + "”.";
      }
    }

    function search() {
      var query = input.value.trim();
      var ticket = ++latest;
      fetch(url + "?q=" + encodeURIComponent(query), { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          if (ticket === latest) show(query, data.topics);
        })
        .catch(function () {
          /* The Find button still works. */
        });
    }

    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(search, DELAY);
    });
    input.addEventListener("keydown", function (event) {
      // Enter in the search box searches; it does not send the form.
      if (event.key === "Enter") {
        event.preventDefault();
        clearTimeout(timer);
        search();
      }
    });
    if (button) {
      button.addEventListener("click", function (event) {
        event.preventDefault();
        clearTimeout(timer);
        search();
      });
    }
  });
})();
