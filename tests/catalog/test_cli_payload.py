"""`python -m core payload` and `python -m core validate`: what a teammate runs to see or check a body."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main

REPO = Path(__file__).resolve().parents[2]
LORA_EDIT = "fal-ai/flux-2/lora/edit"
URL = "https://example.com/ref.png"
OLD_BODY = {"prompt": "A Woman model, photorealistic", "image_urls": [URL],
            "num_inference_steps": 7, "guidance_scale": 3.5, "strength": 0.65}


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120)


def _write(tmp_path, body, name="body.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


# --- as a real process -----------------------------------------------------------------------

def test_validate_refuses_the_old_systems_strength_and_accepts_the_body_without_it(tmp_path):
    """The silent bug we replace: `strength` on flux-2/lora/edit is caught before anything is sent."""
    refused = _run("validate", LORA_EDIT, _write(tmp_path, OLD_BODY))
    assert refused.returncode == 2
    assert "strength" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: ")
    assert refused.stdout == ""

    body = {k: v for k, v in OLD_BODY.items() if k != "strength"}
    accepted = _run("validate", LORA_EDIT, _write(tmp_path, body, "ok.json"))
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip() == "valid"


def test_payload_for_schnell_at_9_16_asks_for_the_matching_portrait_size():
    """The other silent bug: the prompt said 9:16 while schnell was asked for square_hd."""
    result = _run("payload", "fal-ai/flux/schnell", "--option", "subject=Woman",
                  "--option", "aspect_ratio=9:16", "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert '"image_size": "portrait_16_9"' in result.stdout
    body = json.loads(result.stdout)
    assert body == {"prompt": "A Woman model, in 9:16 aspect ratio, photorealistic",
                    "image_size": "portrait_16_9", "seed": 7,
                    "num_inference_steps": 7, "guidance_scale": 3.5}


def test_payload_output_pipes_into_validate():
    built = _run("payload", LORA_EDIT, "--image", URL, "--option", "aspect_ratio=3:4")
    assert built.returncode == 0, built.stderr
    checked = _run("validate", LORA_EDIT, "-", stdin=built.stdout)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "valid"


# --- in process (same entry point, faster) ---------------------------------------------------

def test_payload_prints_indented_json_with_params_and_images(capsys):
    code = main(["payload", LORA_EDIT, "--image", URL, "--image", "reference://abc",
                 "--param", "num_inference_steps=28", "--param", "output_format=jpeg",
                 "--param", "guidance_scale=null", "--option", "style=Cinematic"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("{\n  \"prompt\"")
    body = json.loads(out)
    assert body["image_urls"] == [URL, "reference://abc"]
    assert body["num_inference_steps"] == 28            # JSON number, overriding the preset
    assert body["output_format"] == "jpeg"              # not JSON: taken as the string
    assert "guidance_scale" not in body                 # null: endpoint default applies
    assert body["image_size"] == "square_hd"            # no aspect ratio: the shared default
    assert body["prompt"] == "A model, in Cinematic style, photorealistic"


def test_payload_with_a_bad_param_exits_2_naming_it(capsys):
    code = main(["payload", "fal-ai/flux/schnell", "--param", "num_inference_steps=50"])
    err = capsys.readouterr().err
    assert code == 2
    assert "`num_inference_steps`" in err and "1 to 12" in err


def test_payload_with_strength_on_flux2_exits_2(capsys):
    assert main(["payload", LORA_EDIT, "--image", URL, "--param", "strength=0.65"]) == 2
    assert "fal-ai/flux/dev/image-to-image" in capsys.readouterr().err


def test_payload_with_an_unknown_option_exits_2_listing_valid_options(capsys):
    assert main(["payload", "fal-ai/flux/schnell", "--option", "mood=happy"]) == 2
    err = capsys.readouterr().err
    assert "mood" in err and "aspect_ratio" in err


def test_payload_with_an_unsupported_aspect_ratio_exits_2(capsys):
    assert main(["payload", "fal-ai/flux/schnell", "--option", "aspect_ratio=2:3"]) == 2
    assert "2:3" in capsys.readouterr().err


def test_option_without_equals_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["payload", "fal-ai/flux/schnell", "--option", "Woman"])
    assert e.value.code == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_unknown_endpoint_exits_2_listing_known_ones(capsys, tmp_path):
    assert main(["payload", "fal-ai/nope"]) == 2
    assert "fal-ai/flux/schnell" in capsys.readouterr().err
    assert main(["validate", "fal-ai/nope", _write(tmp_path, {"prompt": "x"})]) == 2
    assert "fal-ai/flux/schnell" in capsys.readouterr().err


def test_validate_prints_one_line_per_problem(capsys, tmp_path):
    body = {"image_urls": [URL] * 5, "num_inference_steps": 99, "strength": 0.65}
    assert main(["validate", LORA_EDIT, _write(tmp_path, body)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4  # strength, prompt missing, too many images, steps out of range
    assert all(line.startswith("error: ") for line in lines)


def test_validate_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"prompt": "x"})))
    assert main(["validate", "fal-ai/flux/schnell", "-"]) == 0
    assert capsys.readouterr().out.strip() == "valid"


def test_validate_a_missing_file_exits_2_clearly(capsys, tmp_path):
    missing = tmp_path / "nope.json"
    assert main(["validate", LORA_EDIT, str(missing)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and str(missing) in err


def test_validate_bad_json_exits_2_with_the_position(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"prompt": "x",}', encoding="utf-8")
    assert main(["validate", LORA_EDIT, str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err and "line 1" in err


def test_validate_a_body_that_is_not_an_object_exits_2(capsys, tmp_path):
    assert main(["validate", LORA_EDIT, _write(tmp_path, ["prompt"])]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_validate_never_prints_a_whole_data_uri(capsys, tmp_path):
    data_uri = "data:image/png;base64," + "QUJD" * 5000
    body = {"prompt": "x", "image_urls": [data_uri] * 5, "seed": data_uri}
    assert main(["validate", LORA_EDIT, _write(tmp_path, body)]) == 2
    err = capsys.readouterr().err
    assert "QUJDQUJD" not in err and "bytes, sha256" in err
