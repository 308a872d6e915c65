"""The README's commands stay true: CI runs exactly the README's test command."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(pip install .*?)\s+#", readme, flags=re.M)
    assert len(commands) >= 2, "the README must show the install+run and the test command"
    test_cmd = next(c.strip() for c in commands if "pytest" in c)
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines() if not l.startswith("#")]
    assert test_cmd in ci_lines, f"{test_cmd!r} must appear as a line of .ci/run"
