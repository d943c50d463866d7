"""The verifying TLS context's trust store: a hashed certificate directory is looked up lazily."""

from __future__ import annotations

from pathlib import Path

from relaycheck.hygiene import _hashed


def test_a_directory_of_subject_hash_names_counts_as_hashed(tmp_path: Path) -> None:
    assert not _hashed(str(tmp_path))  # empty: OpenSSL would find no issuer there
    (tmp_path / "ca-certificates.crt").write_text("")
    assert not _hashed(str(tmp_path))
    (tmp_path / "9d04f354.0").write_text("")
    assert _hashed(str(tmp_path))
    assert not _hashed(str(tmp_path / "missing"))
