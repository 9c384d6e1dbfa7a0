"""The service Dockerfiles, checked without a Docker engine.

No engine runs where these tests run, so the images are never built here. Two kinds of check
stand in for a build:

- static: the properties we promise (multi-stage, dependencies before source, non-root, no
  build tools in the final image, the right entry point, SIGTERM) read from the file itself;
- replayed: the builder stage's own ``uv`` commands, run in a scratch copy of the build context,
  produce an environment with the ``bulkmail`` command and this service's packages, and without
  the other services' (which is also what keeps the GPL-3.0-only IMAP library out of the images
  that do not need it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "query-api": "bulkmail-query-api",
    "dispatcher": "bulkmail-dispatcher",
    "mailer": "bulkmail-mailer",
}
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "uv ", "/uv", "pip install", "apt-get")


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Split a Dockerfile into stages of instructions, joining continuation lines."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def dockerfile(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_image_is_multi_stage_and_the_final_stage_has_no_build_tools(service: str) -> None:
    stages = parse_dockerfile(dockerfile(service))
    assert len(stages) >= 2, "a builder stage and a slim final stage"
    final = stages[-1]
    default_base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile(service).read_text(), re.MULTILINE)
    assert final.base == "${PYTHON_IMAGE}" and default_base and "slim" in default_base.group(1)
    for instruction in final.instructions:
        if instruction.keyword == "RUN":
            for tool in BUILD_TOOLS:
                assert tool not in instruction.args, f"final stage runs {tool!r}: {instruction.args}"
    copies = final.all("COPY")
    assert copies, "the final stage copies the virtual environment from the builder"
    for copy in copies:
        assert copy.args.startswith("--from=builder "), f"final stage copies from the context: {copy.args}"
        assert copy.args.split()[-2] == "/app/.venv", "only the virtual environment reaches the final image"


def test_final_image_runs_as_a_numeric_non_root_user(service: str) -> None:
    final = parse_dockerfile(dockerfile(service))[-1]
    users = final.all("USER")
    assert users, "the final stage sets USER"
    uid = users[-1].args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-zero uid lets Kubernetes verify runAsNonRoot"


def test_entry_point_is_the_service_subcommand_in_exec_form_with_sigterm(service: str) -> None:
    final = parse_dockerfile(dockerfile(service))[-1]
    entrypoints = final.all("ENTRYPOINT")
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0].args) == ["bulkmail", service], "exec form, so the service is PID 1"
    assert [s.args for s in final.all("STOPSIGNAL")] == ["SIGTERM"]
    assert not final.all("CMD"), "arguments come from the entry point; CMD would be appended to it"


def test_dependencies_are_installed_before_the_source_is_copied(service: str) -> None:
    builder = next(s for s in parse_dockerfile(dockerfile(service)) if s.name == "builder")
    package = SERVICES[service]
    keywords = [(i.keyword, i.args) for i in builder.instructions]
    deps_index = next(n for n, (k, a) in enumerate(keywords) if k == "RUN" and "--no-install-workspace" in a)
    deps_command = keywords[deps_index][1]
    for flag in ("--frozen", "--no-dev", f"--package {package}"):
        assert flag in deps_command
    assert "--mount=type=bind,source=uv.lock" in deps_command, "the lock file alone decides layer 1"
    source_copies = [
        n
        for n, (k, a) in enumerate(keywords)
        if k == "COPY" and not a.startswith("--from") and re.search(r"\b(shared|services|bulkmail)\b", a)
    ]
    assert source_copies and min(source_copies) > deps_index
    install_index = next(
        n for n, (k, a) in enumerate(keywords) if k == "RUN" and f"--package {package}" in a and n > deps_index
    )
    assert install_index > max(source_copies)
    assert f"COPY services/{service} ./services/{service}" in {f"COPY {a}" for k, a in keywords if k == "COPY"}


def test_dockerignore_lets_in_what_the_dockerfiles_copy_and_keeps_out_local_state() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        # Docker's rule: the last pattern matching the path or one of its parents wins.
        parents = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
        verdict = False
        for pattern in patterns:
            regex = _glob_to_regex(pattern.lstrip("!").rstrip("/"))
            if any(regex.fullmatch(p) for p in parents):
                verdict = not pattern.startswith("!")
        return verdict

    for service in SERVICES:
        builder = next(s for s in parse_dockerfile(dockerfile(service)) if s.name == "builder")
        for copy in builder.all("COPY"):
            if copy.args.startswith("--from"):
                continue
            for source in copy.args.split()[:-1]:
                assert not ignored(source), f".dockerignore drops {source}, which {service} copies"
        assert not ignored(f"services/{service}/bulkmail/__init__.py")
    for local in (".venv/bin/python", ".git/config", "shared/bulkmail/__pycache__/x.pyc", ".bulkmail-data/x"):
        assert ignored(local), f"{local} would be sent to the Docker daemon"


def _glob_to_regex(glob: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def _replay_builder(service: str, scratch: Path) -> Path:
    """Run the builder stage's COPY/ENV/WORKDIR/RUN instructions in ``scratch``; return the venv."""
    builder = next(s for s in parse_dockerfile(dockerfile(service)) if s.name == "builder")
    context = scratch / "context"
    shutil.copytree(
        ROOT,
        context,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", ".*_cache", ".bulkmail-data"),
    )

    def local(path: str) -> str:
        # Absolute image paths (/src, /app) live under the scratch directory instead.
        return re.sub(r"(?<![\w.])/(src|app)(?=/|\b)", lambda m: f"{scratch}/{m.group(1)}", path)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    workdir = scratch
    for instruction in builder.instructions:
        if instruction.keyword == "ENV":
            for assignment in shlex.split(instruction.args):
                key, _, value = assignment.partition("=")
                env[key] = local(value)
        elif instruction.keyword == "WORKDIR":
            workdir = Path(local(instruction.args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
            *sources, target = instruction.args.split()
            for source in sources:
                src, dst = context / source, workdir / target
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)  # Docker copies a directory's contents
                else:
                    shutil.copy(src, dst / src.name if target.endswith("/") else dst)
        elif instruction.keyword == "RUN":
            mounts = re.match(r"(?:--mount=(\S+)\s+)*", instruction.args)
            assert mounts is not None
            bound: list[Path] = []
            for option in re.findall(r"--mount=(\S+)", mounts.group(0)):
                options = dict(part.split("=", 1) for part in option.split(","))
                if options.get("type") == "bind":
                    target_path = workdir / options["target"]
                    shutil.copy(context / options["source"], target_path)
                    bound.append(target_path)
            command = local(instruction.args[mounts.end() :])
            result = subprocess.run(
                command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, f"{service}: {command}\n{result.stdout}\n{result.stderr}"
            for path in bound:
                path.unlink()  # a bind mount is gone after its RUN
    return Path(env["UV_PROJECT_ENVIRONMENT"])


def _has_module(venv: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([venv / "bin" / "python", "-c", probe], check=False).returncode == 0


@pytest.mark.slow
def test_builder_stage_makes_a_self_contained_environment_per_service(service: str, tmp_path: Path) -> None:
    if shutil.which("uv") is None:
        pytest.fail("uv is needed to replay the Dockerfile's builder stage (pip install uv)")
    venv = _replay_builder(service, tmp_path)

    assert (venv / "bin" / "bulkmail").exists(), "the entry point's command is installed"
    module = "bulkmail." + service.replace("-", "_")
    assert _has_module(venv, module)
    assert _has_module(venv, "bulkmail.shared.migrations"), "every image can run `bulkmail migrate`"
    for pth in venv.glob("lib/python*/site-packages/*.pth"):
        assert str(tmp_path / "src") not in pth.read_text(), "non-editable: nothing points back at /src"
    others = {"query-api": "fastapi", "mailer": "aioimaplib"}
    for other_service, marker in others.items():
        if other_service != service:
            assert not _has_module(venv, marker), f"the {service} image carries {marker}"
    assert not _has_module(venv, "pytest"), "no dev dependencies in an image"
