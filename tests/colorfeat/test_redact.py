"""URL secrets: masked wherever shown or stored, given back only where the requests are made."""

from __future__ import annotations

import pytest

from colorfeat.errors import UserError
from colorfeat.redact import SECRETS_ENV, conceal, redact_text, redact_url, reveal
from colorfeat.sources import acquire


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:tok3n@mirror.example/coco", "https://***@mirror.example/coco"),
        ("https://tok3n@mirror.example:8443/", "https://***@mirror.example:8443/"),
        ("http://u:p%40ss@127.0.0.1:80/a?b=1", "http://***@127.0.0.1:80/a?b=1"),
        (
            "https://m.example/c?token=tok3n&v=2&X-Amz-Signature=abc&api_key=k",
            "https://m.example/c?token=***&v=2&X-Amz-Signature=***&api_key=***",
        ),
        ("https://mirror.example/coco/?page=2", "https://mirror.example/coco/?page=2"),
        ("synthetic", "synthetic"),
        ("/data/coco", "/data/coco"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_text_masks_every_url_in_a_message():
    text = "cannot reach https://a:b@h/x.zip: moved to http://h2/y?sig=zz (see 'https://c@h3')"
    assert redact_text(text) == (
        "cannot reach https://***@h/x.zip: moved to http://h2/y?sig=*** (see 'https://***@h3')"
    )


def test_conceal_keeps_the_original_for_reveal_only(monkeypatch):
    monkeypatch.delenv(SECRETS_ENV, raising=False)
    url = "https://reader:tok3n@mirror.example/coco"
    masked = conceal(url)
    assert masked == "https://***@mirror.example/coco"
    assert reveal(masked) == url
    assert conceal("https://mirror.example/open") == "https://mirror.example/open"
    monkeypatch.delenv(SECRETS_ENV)  # another process: the credentials are not known there
    assert reveal(masked) == masked


def test_a_masked_source_without_its_credentials_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(SECRETS_ENV, "{}")
    with pytest.raises(UserError, match=r"credentials of https://\*\*\*@mirror.example/ are not"):
        acquire("https://***@mirror.example/", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing was asked for, nothing written
