"""Only what pyproject.toml cannot say: a built dispel carries the project's inputs that a report
reads (dispel.project.SHIPPED), so that an installed (not editable) dispel reads nothing from a
repository. Everything else is declared in pyproject.toml."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Relative to the project's root; copied to dispel/_project/ with the same relative paths.
SHIPPED = ("mkdocs.yml", "docs/index.md", "docs/stylesheets/dispel.css", "docs/annotations/*.yml",
           "traces/pins.lock.json", "traces/*/pins.lock.json")


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout itself
        for pattern in SHIPPED:
            found = sorted(ROOT.glob(pattern))
            if not found and "*/" not in pattern:  # other version sets' locks are optional
                raise SystemExit(f"dispel's build: {pattern} not found in {ROOT}")
            for src in found:
                dest = Path(self.build_lib) / "dispel" / "_project" / src.relative_to(ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildPy})
