"""The README quotes measured figures from committed result files, verbatim."""
import re

from course_lib import config

README = config.PROJECT_ROOT / "README.md"
RESULTS = config.PROJECT_ROOT / "benchmarks" / "results"


def test_readme_quotes_each_results_file_verbatim():
    text = README.read_text()
    quoted = re.findall(r"<!-- (\S+\.md) -->\n(.*?)<!-- /\1 -->", text, re.S)
    assert quoted, "the README quotes no results file"
    for name, block in quoted:
        assert (RESULTS / name).exists(), f"the README quotes {name}, which benchmarks/results/ does not hold"
        assert block == (RESULTS / name).read_text(), f"the README's copy of {name} differs from the file"
