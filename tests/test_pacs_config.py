"""[pacs] settings, source URLs, filters and staging files: every refusal names what to fix
(no PACS needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_datasets import run_cli

from insitu.config import NodeHome
from insitu.datasets.dicomweb import PacsQuery, fingerprint, pull, resolve_url
from insitu.datasets.pacs_config import PacsSettings, load_pacs_settings, parse_pacs_section
from insitu.datasets.pacs_staging import pacs_area, received_area
from insitu.errors import ConfigError, SourceError

URL = "https://pacs.example.org/dicom-web"


def _secret(home: NodeHome, name: str = "pw", mode: int = 0o600, text: str = "s3cret") -> str:
    path = home.private / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return f"private/{name}"


def _settings(home: NodeHome, **table: object) -> PacsSettings:
    return parse_pacs_section(dict(table), home, "insitu.toml")


def test_no_section_means_defaults_and_no_credentials(home: NodeHome) -> None:
    settings = load_pacs_settings(home)
    assert settings == PacsSettings(source=str(home.config_path))
    assert not settings.has_credentials
    assert (settings.receive_host, settings.receive_port) == ("127.0.0.1", 11112)


def test_password_and_token_files_are_read_only_when_needed(home: NodeHome) -> None:
    settings = _settings(home, url=URL, username="bot", password_file=_secret(home))
    assert settings.password_file == home.private / "pw" and settings.password() == "s3cret"
    token = _settings(home, url=URL, token_file=_secret(home, "tok", text="abc.def"))
    assert token.token() == "abc.def" and token.credential_keys == "pacs.token_file"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": URL, "pasword_file": "x"}, "unknown key(s) pacs.pasword_file; valid keys"),
        ({"url": URL, "username": "bot"}, "needs pacs.password_file too"),
        ({"url": URL, "password_file": "private/pw"}, "needs pacs.username too"),
        ({"username": "bot", "password_file": "private/pw"}, "no pacs.url"),
        ({"url": URL, "token_file": "t", "username": "b", "password_file": "p"}, "keep one way"),
        ({"url": "ftp://pacs/dicom-web"}, "pacs.url 'ftp://pacs/dicom-web' must be an http"),
        ({"url": "https://bot:pw@pacs.example.org/x"}, "pacs.url must not hold credentials"),
        ({"url": URL, "timeout": "30"}, "pacs.timeout must be a number"),
        ({"parallel": 0}, "pacs.parallel must be 1-16"),
        ({"receive_port": 70000}, "pacs.receive_port 70000 is not a TCP port"),
        ({"receive_ae_title": "A" * 17}, "pacs.receive_ae_title must be 1-16 characters"),
        ({"receive_allowed_aes": ["OK", ""]}, "pacs.receive_allowed_aes must list AE titles"),
        ({"receive_batch_seconds": -1}, "pacs.receive_batch_seconds must not be negative"),
    ],
)
def test_bad_settings_name_the_key(home: NodeHome, table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(home, **table)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("mode", "text", "message"),
    [
        (0o644, "s3cret", "which other users can read: run `chmod 600"),
        (0o600, "", "which is empty"),
        (0o600, "a\nb", "on one line"),
    ],
)
def test_secret_files_must_be_private_and_simple(
    home: NodeHome, mode: int, text: str, message: str
) -> None:
    settings = _settings(
        home, url=URL, username="bot", password_file=_secret(home, mode=mode, text=text)
    )
    with pytest.raises(ConfigError) as caught:
        settings.password()
    assert "pacs.password_file" in str(caught.value) and message in str(caught.value)
    assert "s3cret" not in str(caught.value)
    missing = _settings(home, url=URL, username="bot", password_file="private/none")
    with pytest.raises(ConfigError, match="does not exist"):
        missing.password()


def test_source_urls_map_to_the_configured_pacs(home: NodeHome) -> None:
    plain = PacsSettings()
    assert resolve_url("dicomweb://pacs:8042/dicom-web/", plain) == "http://pacs:8042/dicom-web"
    assert resolve_url("dicomwebs://pacs/dicom-web", plain) == "https://pacs/dicom-web"
    with pytest.raises(ConfigError, match=r"has no pacs\.url"):
        resolve_url("dicomweb://", plain)
    secured = _settings(home, url=URL, username="bot", password_file=_secret(home))
    assert resolve_url("dicomweb://", secured) == URL
    assert resolve_url("dicomwebs://PACS.example.org:443/dicom-web/", secured).endswith(
        ":443/dicom-web"
    )
    # Credentials go only to pacs.url; never in the source; never in clear to another host.
    with pytest.raises(SourceError, match=r"only ever sent to pacs\.url"):
        resolve_url("dicomwebs://elsewhere.example.org/dicom-web", secured)
    with pytest.raises(SourceError, match="never go on the command line"):
        resolve_url("dicomweb://bot:s3cret@pacs/dicom-web", plain)
    with pytest.raises(SourceError, match="filters go in --accession"):
        resolve_url("dicomweb://pacs/dicom-web?AccessionNumber=1", plain)
    clear = _settings(home, url="http://pacs.example.org/dw", username="b", password_file="p")
    with pytest.raises(ConfigError, match="clear text"):
        resolve_url("dicomweb://", clear)
    assert fingerprint("http://PACS:80/dw/") == fingerprint("http://pacs/dw")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accessions": ("A*",)}, "no wildcards"),
        ({"accessions": ("",)}, "1-16 characters"),
        ({"date_range": "2024-01-01"}, "YYYYMMDD-YYYYMMDD"),
        ({"date_range": "20241301-"}, "the start '20241301' is not a date"),
        ({"date_range": "20240201-20240101"}, "the start is after the end"),
        ({"date_range": "-"}, "YYYYMMDD-YYYYMMDD"),
        ({"modality": "C T"}, "a DICOM modality code"),
    ],
)
def test_filters_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        PacsQuery(**kwargs)
    assert message in str(caught.value)


def test_filters_in_words_and_in_qido() -> None:
    query = PacsQuery(accessions=("ACC-1", "ACC-2"), date_range="20240101-", modality="CT")
    assert query.describe() == "2 accession numbers, study date 20240101-, modality CT"
    assert query.study_filters() == [
        {"StudyDate": "20240101-", "ModalitiesInStudy": "CT", "AccessionNumber": a}
        for a in ("ACC-1", "ACC-2")
    ]
    # A PACS that ignored a filter cannot widen the pull.
    study = {"00080050": {"Value": ["ACC-9"]}, "00080020": {"Value": ["20240105"]}}
    assert not query.study_matches(study)
    assert not PacsQuery(date_range="20240106").study_matches(study)
    assert PacsQuery(date_range="20240105").study_matches(study)


def test_a_pull_needs_a_filter_and_filters_need_a_pacs(
    home: NodeHome, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SourceError, match="never pulls a whole PACS"):
        pull("dicomweb://127.0.0.1:9/dicom-web", PacsQuery(), dataset="x", home=home)
    code, _out, err = run_cli(["ingest", "folder", "--dataset", "x", "--modality", "CT"], capsys)
    assert code == 1 and "filter a dicomweb:// source; none was given" in err
    with pytest.raises(SystemExit) as usage:
        run_cli(["receive", "--dataset", "x", "--batch-seconds", "-1"], capsys)
    assert usage.value.code == 2 and "0 or more" in capsys.readouterr().err


def test_staging_files_are_whole_private_and_anonymous(home: NodeHome) -> None:
    area = pacs_area(home, "abc")
    key = "1.2.3/1.2.3.4/1.2.3.4.5"
    assert not area.has(key)
    path = area.write_keyed(key, b"x" * 10)
    assert area.has(key) and path.read_bytes() == b"x" * 10
    assert "1.2.3" not in path.name and path.stat().st_mode & 0o077 == 0
    assert path.parent == home.staging / "pacs" / "abc"
    (area.folder / f".{path.name}.99.part").write_bytes(b"half")
    assert area.remove_partials() == 1 and area.files() == [path]
    received = received_area(home, "trial")
    first = received.write_content(b"DICM data")
    assert received.write_content(b"DICM data") == first  # a resend is the same file
    assert received.files() == [first]
    area.discard([path])
    assert area.files() == []
    assert isinstance(path, Path)


def test_sessions_carry_the_configured_login(home: NodeHome) -> None:
    from insitu.datasets.dicomweb import _session

    token = _settings(home, url=URL, token_file=_secret(home, "tok", text="abc.def"))
    assert _session(token).headers["Authorization"] == "Bearer abc.def"
    basic = _settings(home, url=URL, username="bot", password_file=_secret(home))
    session = _session(basic)
    assert session.auth == ("bot", "s3cret") and "Authorization" not in session.headers
    pinned = _settings(home, url=URL, ca_file="private/ca.pem")
    assert _session(pinned).verify == str(home.private / "ca.pem")
