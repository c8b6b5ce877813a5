"""The console: other libraries' output (C++ on file descriptors 1 and 2, Python logging, warnings) stays out of
sight unless asked for with -v/-vv, imgpipe's own lines and results always get through, and the descriptors are
restored afterwards."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from imgpipe.pipeline.core.console import command_console, echo, native_output, user_streams

imgpipe_log = logging.getLogger("imgpipe.test")
other_log = logging.getLogger("somelibrary")


def _chatter() -> None:
    os.write(2, b"I0000 00:00:1 cuda_platform.cc:52] failed call to cuInit\n")
    os.write(1, b"fully_quantize: 0, inference_type: 6\n")
    other_log.warning("Failed to load _MLModelProxy")
    warnings.warn("an untested TensorFlow version", UserWarning)


@pytest.mark.parametrize("verbose", [0, 1])
def test_other_libraries_are_quiet_unless_asked(capfd, verbose):
    with command_console(verbose):
        with native_output("export tflite:int8"):
            _chatter()
        imgpipe_log.info("scan: 0.5 s")
        imgpipe_log.debug("a debug detail")
        echo("the table")
    out, err = capfd.readouterr()
    assert out == "the table\n"
    assert "scan: 0.5 s" in err
    assert "Failed to load" not in err and "untested" not in err
    if verbose:  # -v: imgpipe's debug lines, and what the converter printed, attributed to its stage
        assert "a debug detail" in err
        assert "export tflite:int8 printed:" in err and "fully_quantize: 0" in err and "cuInit" in err
    else:
        assert err.strip() == "scan: 0.5 s"


def test_everything_shows_with_vv(capfd):
    with command_console(2):
        _chatter()
        imgpipe_log.info("scan: 0.5 s")
    out, err = capfd.readouterr()
    assert "fully_quantize" in out and "cuInit" in err
    assert "[somelibrary] warning: Failed to load _MLModelProxy" in err and "untested TensorFlow" in err


def test_descriptors_and_logging_are_restored(capfd):
    root_handlers = list(logging.getLogger().handlers)
    with command_console(0):
        assert user_streams()[0] is not None
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert logging.getLogger().handlers == root_handlers
    assert not [h for h in logging.getLogger("imgpipe").handlers if type(h).__name__ == "_ConsoleHandler"]


def test_an_unexpected_failure_shows_what_other_libraries_said_last(capfd):
    with pytest.raises(RuntimeError), command_console(0):
        os.write(2, b"F0000 converter.cc:1] Check failed: tensor shape\n")
        raise RuntimeError("converter crashed")
    assert "Check failed: tensor shape" in capfd.readouterr().err


def test_an_explained_error_shows_only_its_own_line(capfd):
    from imgpipe.pipeline.core.errors import DatasetError

    with pytest.raises(DatasetError), command_console(0):
        os.write(2, b"noise\n")
        raise DatasetError("data: not found")
    assert "noise" not in capfd.readouterr().err
