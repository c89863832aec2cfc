"""Base images from a mirror (issue 13 item 9) and the binary-check keys (item 8): the
names BuildKit looks images up by, the FROM rewrite for builders without named contexts,
the build's arguments, and the configuration keys refused when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.domain.base_images import (
    build_contexts,
    context_name,
    rewrite_from_lines,
    supports_named_contexts,
)
from jobs.domain.config import ConfigError
from jobs.domain.config_reader import parse_config
from jobs.domain.platforms import parse_platform
from jobs.domain.references import InvalidReferenceError
from jobs.tools.build import BuildRequest, redirect_base_images
from tests.support.config import SOURCE, TOP, doc

MIRROR = "127.0.0.1:5000/lab/base:latest"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("golang:1.22", "golang:1.22"),
        ("docker.io/library/golang:1.22", "golang:1.22"),
        ("index.docker.io/library/busybox:latest", "busybox"),
        ("busybox", "busybox"),
        ("envoyproxy/envoy:v1.33.2", "envoyproxy/envoy:v1.33.2"),
        ("gcr.io/distroless/static:nonroot", "gcr.io/distroless/static:nonroot"),
        ("127.0.0.1:5000/lab/base", "127.0.0.1:5000/lab/base"),
    ],
)
def test_context_names_are_buildkits_familiar_names(text: str, name: str) -> None:
    assert context_name(text) == name


@pytest.mark.parametrize("text", ["", "-o=x", "Golang:1.22", "golang:1.22 --push", "a::b"])
def test_text_that_is_no_image_is_refused(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        context_name(text)


def test_build_contexts_name_docker_images() -> None:
    assert build_contexts({"docker.io/library/golang:1.22": "m.example/golang:1.22"}) == {
        "golang:1.22": "docker-image://m.example/golang:1.22"
    }


def test_named_contexts_need_buildkit_0_10() -> None:
    assert not supports_named_contexts("v0.8+unknown")
    assert not supports_named_contexts("v0.9.3")
    assert supports_named_contexts("v0.10.0")
    assert supports_named_contexts("v0.12.5")
    assert supports_named_contexts("")  # unknown: let the build say


AIBRIX_GATEWAY = """\
# syntax=docker/dockerfile:1
ARG BUILDER_IMAGE=golang:1.22
ARG RUNTIME_IMAGE=gcr.io/distroless/base-debian12:nonroot
FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS builder
RUN go build \\
    -o /gateway-plugins ./cmd/plugins
FROM builder AS tested
FROM ${RUNTIME_IMAGE:-busybox}
COPY --from=builder /gateway-plugins /gateway-plugins
"""


def test_from_lines_are_redirected_after_expanding_global_args() -> None:
    mapping = {
        "golang:1.22": "mirror.example/library/golang:1.22",
        "gcr.io/distroless/base-debian12:nonroot": "mirror.example/distroless/base:nonroot",
        "builder": "mirror.example/never:used",
    }
    text, redirected = rewrite_from_lines(AIBRIX_GATEWAY, mapping)
    assert redirected == ("golang:1.22", "gcr.io/distroless/base-debian12:nonroot")
    lines = text.splitlines()
    assert (
        lines[3] == "FROM --platform=$BUILDPLATFORM mirror.example/library/golang:1.22 AS builder"
    )
    assert lines[4:6] == ["RUN go build \\", "    -o /gateway-plugins ./cmd/plugins"]
    assert lines[6] == "FROM builder AS tested"  # a stage, not an image
    assert lines[7] == "FROM mirror.example/distroless/base:nonroot"
    # A build argument overrides the global default, as in BuildKit.
    text, redirected = rewrite_from_lines(AIBRIX_GATEWAY, mapping, {"BUILDER_IMAGE": "golang:1.23"})
    assert redirected == ("gcr.io/distroless/base-debian12:nonroot",)
    assert "FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS builder" in text
    # Nothing mapped: the text is unchanged, byte for byte.
    assert rewrite_from_lines(AIBRIX_GATEWAY, {}) == (AIBRIX_GATEWAY, ())


def test_the_default_of_an_unset_argument_and_the_escape_directive() -> None:
    text, redirected = rewrite_from_lines(
        "# escape=`\nARG IMG\nFROM ${IMG:-busybox:1.36} `\n  AS base\nRUN echo\n",
        {"busybox:1.36": MIRROR},
    )
    assert redirected == ("busybox:1.36",)
    assert text == f"# escape=`\nARG IMG\nFROM {MIRROR} AS base\nRUN echo\n"


def _request(tmp_path: Path, dockerfile: str, base_images: dict[str, str]) -> BuildRequest:
    (tmp_path / "src").mkdir(parents=True)
    (tmp_path / "src" / "Dockerfile").write_text(dockerfile)
    (tmp_path / "src" / "Dockerfile.dockerignore").write_text("secret\n")
    (tmp_path / "meta").mkdir()
    return BuildRequest(
        context=tmp_path / "src",
        dockerfile=tmp_path / "src" / "Dockerfile",
        platform=parse_platform("linux/arm64"),
        image="127.0.0.1:5000/x/y",
        staging_tag="v1-arm64",
        metadata_file=tmp_path / "meta" / "metadata.json",
        base_images=base_images,
    )


def test_a_build_gets_named_contexts_or_a_rewritten_copy(tmp_path: Path) -> None:
    request = _request(tmp_path, "FROM busybox:1.36\nRUN true\n", {"busybox:1.36": MIRROR})
    assert redirect_base_images(request, named_contexts=True) == {
        "build_contexts": {"busybox:1.36": f"docker-image://{MIRROR}"}
    }
    arguments = redirect_base_images(request, named_contexts=False)
    copy = arguments["file"]
    assert copy.parent == tmp_path / "meta" / "dockerfile"
    assert copy.read_text() == f"FROM {MIRROR}\nRUN true\n"
    assert (copy.parent / "Dockerfile.dockerignore").read_text() == "secret\n"
    # The source is never modified.
    assert request.dockerfile.read_text() == "FROM busybox:1.36\nRUN true\n"
    assert redirect_base_images(_request(tmp_path / "n", "FROM x\n", {}), False) == {}


# ---- the configuration keys --------------------------------------------------------


def test_base_images_and_binaries_are_read() -> None:
    text = doc(
        top=f"{TOP}\ncheck_binaries = false",
        extra='[base_images]\n"golang:1.22" = "mirror.example/golang:1.22"\n',
        components='[[components]]\nname = "gateway-plugins"\n'
        'binaries = ["/gateway-plugins", "/usr/lib/"]\n',
    )
    config = parse_config(text, Path("/etc/aibrix.toml"))
    assert dict(config.base_images) == {"golang:1.22": "mirror.example/golang:1.22"}
    assert config.check_binaries is False
    assert config.components[0].binaries == ("/gateway-plugins", "/usr/lib")
    default = parse_config(doc(), Path("/etc/aibrix.toml"))
    assert default.check_binaries is True and not default.base_images
    assert default.components[0].binaries == ()


@pytest.mark.parametrize(
    ("extra", "components", "key", "reason"),
    [
        (
            '[base_images]\n"golang:1.22" = "--push"',
            "",
            "base_images['golang:1.22']",
            "starts with",
        ),
        ('[base_images]\n"Golang" = "m.example/g:1"', "", "base_images.Golang", "lowercase"),
        ('[base_images]\n"golang" = "m example/g"', "", "base_images.golang", "white space"),
        ('[base_images]\n"golang" = 3', "", "base_images.golang", "a string"),
        (
            '[base_images]\n"golang:1.22" = "docker.io/library/golang:1.22"',
            "",
            "base_images",
            "mapped to the image it names",
        ),
        (
            '[base_images]\n"golang:1.22" = "m.example/a:1"\n'
            '"docker.io/library/golang:1.22" = "m.example/b:1"',
            "",
            "base_images",
            "golang:1.22",
        ),
        ("base_images = []", "", "base_images", "a table"),
        ("check_binaries = 1", "", "check_binaries", "true or false"),
        ("", 'binaries = ["usr/bin"]', "components[0].binaries[0]", "absolute"),
        ("", 'binaries = ["/usr/../bin"]', "components[0].binaries[0]", "'/bin'"),
        ("", 'binaries = ["/a", "/a/"]', "components[0].binaries[1]", "/a"),
        ("", 'binaries = "/a"', "components[0].binaries", "an array"),
        ("", 'binaries = ["-rf"]', "components[0].binaries[0]", "-rf"),
    ],
)
def test_bad_keys_are_refused_with_the_key(
    extra: str, components: str, key: str, reason: str
) -> None:
    text = f'{TOP}\n{extra}\n{SOURCE}\n[[components]]\nname = "runtime"\n{components}\n'
    with pytest.raises(ConfigError) as error:
        parse_config(text, Path("/etc/aibrix.toml"))
    assert error.value.key.startswith(key), error.value.key
    assert reason in str(error.value)
