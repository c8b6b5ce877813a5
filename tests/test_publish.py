"""Publishing can never lose a bundle: the process is stopped between every pair of filesystem steps of a publish
(in-process for every scenario, and by a real SIGKILL in a subprocess for the main one), and at every point OUT
holds a complete bundle, old or new, never none and never a mix; the next build then settles OUT so the reports
match the bundle again. Plus the lock on OUT and what SIGTERM does. No TensorFlow here: fake builds of a few files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imgpipe.pipeline.bundle import staging
from imgpipe.pipeline.bundle.lock import BUILD_LOCK, lock_build
from imgpipe.pipeline.bundle.staging import (
    DISCARD_PREFIX,
    JOURNAL,
    PREVIOUS,
    PUBLISHED_ENTRIES,
    STAGING_PREFIX,
    OutputFolder,
    Staging,
    recover,
)
from imgpipe.pipeline.core.errors import BusyError
from imgpipe.pipeline.core.signals import Terminated, signals_held, stop_on_sigterm

BUNDLE_FILES = ("manifest.json", "SHA256SUMS", "android/model.tflite", "ios/M.mlpackage/Data/weight.bin")
ENTRY_FILES = {
    "report.md": None,
    "report.html": None,
    "metrics.json": None,
    "build.json": None,
    "logs": "head/events",
    "keras": "m.keras",
}


class Killed(BaseException):
    """Stands for the process dying: a BaseException, so no `except Exception` cleanup runs (as with SIGKILL)."""


def write_version(root: Path, version: str, entries=PUBLISHED_ENTRIES) -> None:
    """A fake build: every file says which build wrote it."""
    for name in entries:
        if name == "bundle":
            files = [root / "bundle" / rel for rel in BUNDLE_FILES]
        else:
            inner = ENTRY_FILES[name]
            files = [root / name / inner] if inner else [root / name]
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{version}:{path.relative_to(root).as_posix()}")


def version_of(path: Path) -> str | None:
    """The build an entry comes from; None when absent. A bundle must be complete and all from one build."""
    if not os.path.lexists(path):
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    versions = {p.read_text().split(":")[0] for p in files}
    assert len(versions) == 1, f"{path} mixes builds {versions}"
    if path.name in ("bundle", ".aside-bundle"):
        assert sorted(p.relative_to(path).as_posix() for p in files) == sorted(BUNDLE_FILES), f"{path} incomplete"
    return versions.pop()


def publish_version(out: Path, version: str, entries=PUBLISHED_ENTRIES) -> None:
    with Staging(out) as s:
        write_version(s.root, version, entries)
        s.publish()


def state(out: Path) -> dict[str, str | None]:
    return {name: version_of(out / name) for name in PUBLISHED_ENTRIES}


def copies_of_old_bundle(out: Path, old: str) -> int:
    """Complete copies of the old bundle anywhere in OUT (live, staged, aside or previous)."""
    found = 0
    for p in [out / "bundle", *out.glob("*/bundle"), *out.glob("*/.aside-bundle")]:
        if p.is_dir() and version_of(p) == old:
            found += 1
    return found


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith((STAGING_PREFIX, DISCARD_PREFIX)))


SCENARIOS = {
    # name: (old build's entries or None for a first publish, new build's entries, atomic exchange available)
    "exchange": (PUBLISHED_ENTRIES, PUBLISHED_ENTRIES, True),
    "three-renames": (PUBLISHED_ENTRIES, PUBLISHED_ENTRIES, False),
    "first-publish": (None, PUBLISHED_ENTRIES, True),
    "entries-change": (
        tuple(e for e in PUBLISHED_ENTRIES if e != "metrics.json"),
        tuple(e for e in PUBLISHED_ENTRIES if e != "logs"),
        True,
    ),
    "entries-change-three-renames": (
        tuple(e for e in PUBLISHED_ENTRIES if e != "metrics.json"),
        tuple(e for e in PUBLISHED_ENTRIES if e != "logs"),
        False,
    ),
}


def setup_scenario(tmp_path: Path, name: str, monkeypatch) -> tuple[Path, Staging, tuple, tuple]:
    old_entries, new_entries, native = SCENARIOS[name]
    if not native:
        monkeypatch.setattr(staging, "_native_exchange", lambda a, b: False)
    out = tmp_path / "out"
    out.mkdir(parents=True)
    if old_entries is not None:
        publish_version(out, "v0", old_entries)  # the one before the old: becomes the discarded previous
        publish_version(out, "old", old_entries)
    s = Staging(out)
    write_version(s.root, "new", new_entries)
    return out, s, old_entries or (), new_entries


def check_live_bundle(out: Path, name: str, when: str) -> None:
    """OUT/bundle is a complete bundle, old or new; only three renames (no atomic exchange on this system) leave
    a moment without one, and then the old one is complete beside it. Until the new one is live, the old exists."""
    old_entries, _, native = SCENARIOS[name]
    live = version_of(out / "bundle")
    allowed = {"new"} | ({"old"} if old_entries else {None}) | (set() if native or not old_entries else {None})
    assert live in allowed, f"{when}: OUT/bundle is {live}"
    if old_entries and live != "new":
        assert copies_of_old_bundle(out, "old") >= 1, f"{when}: the old bundle exists nowhere"


def count_steps(tmp_path: Path, name: str, monkeypatch) -> list[str]:
    """Publish once without stopping, checking at every step what a reader of OUT would see."""
    out, s, old_entries, _ = setup_scenario(tmp_path / "count", name, monkeypatch)
    steps: list[str] = []

    def observe(what: str) -> None:
        steps.append(what)
        check_live_bundle(out, name, what)

    monkeypatch.setattr(staging, "STEP_HOOK", observe)
    s.publish()
    monkeypatch.setattr(staging, "STEP_HOOK", None)
    assert state(out) == {e: ("new" if e in SCENARIOS[name][1] else None) for e in PUBLISHED_ENTRIES}
    assert leftovers(out) == []
    if old_entries:
        assert state(out / PREVIOUS) == {e: ("old" if e in old_entries else None) for e in PUBLISHED_ENTRIES}
    return steps


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_crash_between_any_two_steps_of_publish_leaves_a_whole_bundle(tmp_path, monkeypatch, name):
    steps = count_steps(tmp_path, name, monkeypatch)
    assert len(steps) >= 4
    for k, what in enumerate(steps):
        out, s, old_entries, new_entries = setup_scenario(tmp_path / f"crash-{k}", name, monkeypatch)

        def crash(step: str, calls=[0]) -> None:  # noqa: B006 - a counter per crash point
            calls[0] += 1
            if calls[0] == k + 1:
                raise Killed(step)

        monkeypatch.setattr(staging, "STEP_HOOK", crash)
        with pytest.raises(Killed):
            s.publish()  # no `with Staging`: a killed process runs no cleanup
        monkeypatch.setattr(staging, "STEP_HOOK", None)
        check_live_bundle(out, name, f"killed before {what}")

        with OutputFolder(out):  # the next build: takes the lock, settles what the killed one left
            expected = "new" if k > 0 else ("old" if old_entries else None)  # step 0 writes the journal
            entries = new_entries if expected == "new" else old_entries
            assert state(out) == {e: (expected if e in entries else None) for e in PUBLISHED_ENTRIES}, what
            assert leftovers(out) == [], what
            assert not (out / PREVIOUS / JOURNAL).exists()
            publish_version(out, "next")
            assert set(state(out).values()) == {"next"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() and SIGKILL")
def test_a_real_sigkill_at_every_step_of_publish_leaves_a_whole_bundle(tmp_path, monkeypatch):
    """The same with a real process killed by SIGKILL at step k (the in-process crash above is only a stand-in):
    a forked child publishes and kills itself before step k, so nothing of Python's runs after."""
    steps = count_steps(tmp_path, "exchange", monkeypatch)
    for k, what in enumerate(steps):
        out = tmp_path / f"kill-{k}" / "out"
        out.mkdir(parents=True)
        publish_version(out, "v0")
        publish_version(out, "old")
        pid = os.fork()
        if pid == 0:  # the child: publish, dying by SIGKILL before step k
            calls = [0]

            def kill(step: str) -> None:
                calls[0] += 1
                if calls[0] == k + 1:
                    os.kill(os.getpid(), signal.SIGKILL)

            try:
                s = Staging(out)
                write_version(s.root, "new")
                staging.STEP_HOOK = kill
                s.publish()
            finally:
                os._exit(0)  # never reached when killed; never return into pytest from the child
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"step {k} ({what}) not reached"
        assert version_of(out / "bundle") in ("old", "new"), what
        assert copies_of_old_bundle(out, "old") >= 1 or version_of(out / "bundle") == "new", what
        with OutputFolder(out):
            assert set(state(out).values()) == {"new" if k > 0 else "old"}, what
            assert leftovers(out) == []


@pytest.mark.parametrize("native", [True, False])
def test_an_error_during_publish_swaps_everything_back(tmp_path, monkeypatch, native):
    steps = count_steps(tmp_path, "exchange" if native else "three-renames", monkeypatch)
    for k in range(1, len(steps)):
        out, s, _, _ = setup_scenario(tmp_path / f"error-{k}", "exchange" if native else "three-renames", monkeypatch)

        def fail(step: str, calls=[0]) -> None:  # noqa: B006
            calls[0] += 1
            if calls[0] == k + 1:
                raise PermissionError(13, "Permission denied", str(out / "report.md"))

        monkeypatch.setattr(staging, "STEP_HOOK", fail)
        try:
            with s:
                s.publish()
            outcome = "published"  # the error came after the new build was live (clearing out the old one)
        except PermissionError:
            outcome = "undone"
        monkeypatch.setattr(staging, "STEP_HOOK", None)
        expected = "new" if outcome == "published" else "old"
        assert set(state(out).values()) == {expected}, f"step {k}: {steps[k]}"
        assert not list(out.glob(STAGING_PREFIX + "*")) or outcome == "published"
        if outcome == "undone":
            assert steps[k].startswith(("exchange", "move", "keep the old", "put", "take", "finish"))


def test_a_publish_that_cannot_be_undone_is_finished_by_the_next_build(tmp_path, monkeypatch):
    out, s, _, _ = setup_scenario(tmp_path, "exchange", monkeypatch)

    def fail_from_third(step: str, calls=[0]) -> None:  # noqa: B006
        calls[0] += 1
        if calls[0] >= 3:
            raise OSError(5, "Input/output error", str(out / "report.md"))

    monkeypatch.setattr(staging, "STEP_HOOK", fail_from_third)
    with pytest.raises(OSError) as error:
        with s:
            s.publish()
    monkeypatch.setattr(staging, "STEP_HOOK", None)
    assert "the next build into" in error.value.__notes__[0]
    assert (s.root / JOURNAL).exists(), "the journal stays for the next build"
    assert version_of(out / "bundle") in ("old", "new")
    recover(out)
    assert set(state(out).values()) == {"new"} and leftovers(out) == []


def test_stale_staging_folders_are_removed_a_running_builds_are_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    publish_version(out, "a")
    publish_version(out, "b")
    dead = Staging(out)  # a build killed before publishing
    write_version(dead.root, "half")
    with OutputFolder(out):
        assert leftovers(out) == [] and set(state(out).values()) == {"b"}
        assert set(state(out / PREVIOUS).values()) == {"a"}
        running = Staging(out)
        with pytest.raises(BusyError):  # a second build cannot even start, let alone clean up
            OutputFolder(out).__enter__()
        assert running.root.exists()


# --- the lock on OUT ------------------------------------------------------------------------------------------


def test_a_second_build_into_the_same_out_stops_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out):
        started = time.perf_counter()
        with pytest.raises(BusyError) as error:
            lock_build(out, wait=False)
        assert time.perf_counter() - started < 1
        message = str(error.value)
        assert message.startswith(f"{out}: another imgpipe build is writing to this folder")
        assert f"pid {os.getpid()} on " in message and "started 20" in message and "--wait" in message
    assert not out.exists(), "a first build that published nothing leaves no folder (and no lock file) behind"


def test_the_command_line_refuses_a_held_out_before_loading_tensorflow(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import sys; from imgpipe.pipeline.commands.cli import main; "
        "rc = main(['build', '--out', sys.argv[1], '--dataset', sys.argv[2]]); "
        "print('tensorflow' in sys.modules); sys.exit(rc)"
    )
    holder = lock_build(out, wait=False)
    try:
        run = [sys.executable, "-c", code, str(out), str(tmp_path / "data")]
        proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
    finally:
        holder.release()
    assert proc.returncode == 2 and proc.stdout.strip() == "False", proc.stderr
    assert proc.stderr.strip().startswith(f"imgpipe: error: {out}: another imgpipe build is writing to this folder")


def test_wait_queues_behind_the_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = lock_build(out, wait=False)
    threading.Timer(0.5, first.release).start()
    started = time.perf_counter()
    second = lock_build(out, wait=True)
    assert time.perf_counter() - started >= 0.4
    second.release()
    assert not (out / BUILD_LOCK).exists()


def test_a_killed_holder_releases_the_lock(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import sys, time; from pathlib import Path; from imgpipe.pipeline.bundle.lock import lock_build; "
        "lock_build(Path(sys.argv[1]), wait=False); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=f"pid {holder.pid} on "):
            lock_build(out, wait=False)
    finally:
        holder.kill()
        holder.wait()
    lock_build(out, wait=False).release()  # SIGKILL left the lock file, but not the lock


# --- signals --------------------------------------------------------------------------------------------------


def test_a_signal_during_publish_is_delivered_once_the_publish_is_complete(tmp_path, monkeypatch):
    out, s, _, _ = setup_scenario(tmp_path, "exchange", monkeypatch)
    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    try:
        monkeypatch.setattr(staging, "STEP_HOOK", lambda what: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(Terminated) as stopped:
            with s:
                s.publish()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert set(state(out).values()) == {"new"} and leftovers(out) == []
    assert "is this build's" in stopped.value.__notes__[0]


@pytest.fixture
def ctrl_c():
    """Ctrl-C raising KeyboardInterrupt, as at a terminal, even where the test runner was started with SIGINT
    ignored (a background job of a non-interactive shell is)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interruptible() -> None:
    """In a child before it starts Python: SIGINT at its default, so Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_signals_held_restores_the_handlers(tmp_path, ctrl_c):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


STUB_BUILD = """
import sys, time, types
from pathlib import Path
from imgpipe.pipeline.bundle.staging import OutputFolder, Staging

def slow_build(config=None, **options):  # stands in for the real build (no TensorFlow to import)
    with OutputFolder(Path(options["out"])), Staging(Path(options["out"])) as s:
        (s.bundle / "half-written").write_text("x")
        (Path(options["out"]).parent / "building").write_text("")  # the console captures stdout while it runs
        time.sleep(60)

sys.modules["imgpipe.pipeline.api"] = types.SimpleNamespace(build=slow_build)
from imgpipe.pipeline.commands.cli import main
sys.exit(main(["build", "--out", sys.argv[1]]))
"""


@pytest.mark.parametrize(
    "signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_sigterm_and_sigint_stop_a_build_publishing_nothing(tmp_path, signum, code, word):
    out = tmp_path / "out"
    out.mkdir()
    publish_version(out, "old")
    before = state(out)
    proc = subprocess.Popen(
        [sys.executable, "-c", STUB_BUILD, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "building").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "building").exists(), "the stub build did not start"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert err.strip().splitlines() == [f"imgpipe: {word}; nothing was published"]
    assert state(out) == before and leftovers(out) == [] and not (out / BUILD_LOCK).exists()


def test_the_journal_names_every_entry_with_its_new_inode(tmp_path, monkeypatch):
    out, s, _, _ = setup_scenario(tmp_path, "exchange", monkeypatch)
    seen = {}

    def capture(what: str) -> None:
        if what.startswith("exchange") and not seen:
            seen.update(json.loads((s.root / JOURNAL).read_text()))

    monkeypatch.setattr(staging, "STEP_HOOK", capture)
    identities = {name: [os.lstat(s.root / name).st_dev, os.lstat(s.root / name).st_ino] for name in PUBLISHED_ENTRIES}
    s.publish()
    assert dict(seen["entries"]) == identities
