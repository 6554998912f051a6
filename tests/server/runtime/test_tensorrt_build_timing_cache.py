"""The builder's timing cache without TensorRT: a stand-in for IBuilderConfig's two timing-cache
calls, to check which cache the builder gets when the file is missing, usable or refused."""

from __future__ import annotations

from vfnet.server.runtime.backends.tensorrt.build import _use_timing_cache


class Config:
    """IBuilderConfig's timing-cache calls: create_timing_cache returns None for a blob TensorRT
    cannot read; set_timing_cache returns False for one from another GPU."""

    def __init__(self, unreadable: bytes = b"", foreign: bytes = b""):
        self.unreadable, self.foreign, self.used = unreadable, foreign, None

    def create_timing_cache(self, blob: bytes):
        return None if blob and blob == self.unreadable else ("cache", blob)

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # a foreign cache must be refused, not half used
        if cache[1] and cache[1] == self.foreign:
            return False
        self.used = cache
        return True


def test_a_usable_file_is_used_and_a_missing_one_starts_a_new_cache(tmp_path):
    path = tmp_path / "timing.cache"
    messages = []
    config = Config()
    _use_timing_cache(config, path, messages.append)
    assert config.used == ("cache", b"") and messages == []
    path.write_bytes(b"timings")
    _use_timing_cache(config, path, messages.append)
    assert config.used == ("cache", b"timings") and messages == []


def test_an_unreadable_or_foreign_cache_is_replaced_by_a_new_one_with_a_message(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"damaged")
    for config in (Config(unreadable=b"damaged"), Config(foreign=b"damaged")):
        messages = []
        _use_timing_cache(config, path, messages.append)
        assert config.used == ("cache", b"")
        assert messages == [f"{path}: a timing cache TensorRT cannot use here; starting a new one"]
