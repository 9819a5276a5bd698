import time


class Progress:
    """A one-line progress bar for a terminal, redrawn at most ten times a
    second; does nothing when the output is not a terminal."""

    def __init__(self, out, total=None, unit="rows"):
        self.out = out
        self.total = total
        self.unit = unit
        self.enabled = out.isatty()
        self._drawn_at = 0.0

    def update(self, done, force=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        if self.total:
            share = min(done / self.total, 1)
            bar = "#" * int(share * 30)
            line = f"[{bar:<30}] {share:4.0%} {done:,}/{self.total:,} {self.unit}"
        else:
            line = f"{done:,} {self.unit}"
        self.out.write(f"\r\033[K{line}", ending="")
        self.out.flush()

    def message(self, text):
        """A line above the bar."""
        prefix = "\r\033[K" if self.enabled else ""
        self.out.write(prefix + text)

    def finish(self, done):
        if self.enabled:
            self.update(done, force=True)
            self.out.write("")
