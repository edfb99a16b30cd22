"""Fixtures shared by the evaluation tests. Every test here that takes `settings` or `st` runs on
both engines (tests/engines.py): the comparison's reads are the store's most engine-specific SQL."""
import pytest

from core.store import open_store
from tests.engines import *  # noqa: F403


@pytest.fixture
def st(settings):
    """A real store file in the test's data directory."""
    settings.ensure_dirs()
    conn = open_store(settings)
    yield conn
    conn.close()


class _BrokenDetector:
    def run(self, *args):
        raise RuntimeError("Unsupported image type")


@pytest.fixture
def dlib_fails(monkeypatch):
    """dlib's face detector raises (as it does on an image type it does not take), with the
    descriptor cache emptied so nothing measured before is recalled."""
    from core.evaluation import metrics

    real = metrics._load_models()
    monkeypatch.setattr(metrics, "_models", metrics._Models(_BrokenDetector(), real.predictor, real.encoder))
    monkeypatch.setattr(metrics, "_descriptors", type(metrics._descriptors)())
