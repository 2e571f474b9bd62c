"""The version-sync governor: one valid version everywhere, in the changelog, bumped as the
commits say.

In a checkout of the revision to check (``policy:`` in ``agents/manifests/version-sync.yaml``,
see :class:`VersionSyncPolicy`):

* **Version files.** The versions in ``pyproject.toml`` (``[project] version``, else
  ``[tool.poetry] version``) and ``package.json`` (``version``) are read; only the
  files present are compared. With neither, the changelog's newest release is the
  version; with none of the three there is nothing to check: a violation.
* **Semver.** Each version is a valid semantic version (``1.2.3``, ``1.2.3-rc.1``;
  no ``v`` prefix).
* **Agreement.** All versions are the same.
* **Changelog entry.** ``CHANGELOG.md``'s newest release heading, ``## [1.2.3]`` or
  ``## 1.2.3`` (Keep a Changelog; ``## [Unreleased]`` is skipped), is the version.
  A missing changelog is a violation unless ``require_changelog`` is false.
* **Bump.** Against the last tag (``git describe --tags --abbrev=0``, ``v`` prefix
  optional), the conventional commits since it ask for a bump: ``feat`` a minor,
  ``fix`` and ``perf`` a patch, ``type!:`` or a ``BREAKING CHANGE:`` footer a major;
  other types and non-conventional messages none; merge commits are not counted.
  The version must be exactly the last tag bumped by that much (a pre-release of it
  counts: ``1.3.0-rc.1``). Unchanged is fine when nothing asks for a bump, and also
  when something does if ``require_bump`` is false (projects that bump at release
  time). Before 1.0.0, with ``major_version_zero`` (the default, as commitizen does),
  a breaking change bumps the minor and a ``feat`` the minor too, so a 0.x project
  does not jump to 1.0.0 by accident. With no tag yet the bump is not checked (a
  first release has nothing to compare with), and the note says so.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import semver

from agents.governors.base import Governor, GovernorPolicy
from agents.governors.checkout import Commit, Workspace, workspace
from agents.governors.inputs import GovernorInput
from agents.governors.report import Report

__all__ = [
    "Bump",
    "VersionSyncAgent",
    "VersionSyncPolicy",
    "bump_of",
    "changelog_releases",
]

_HEADER = re.compile(r"(?P<type>[A-Za-z]+)(?:\([^()]*\))?(?P<bang>!)?: \S")
_BREAKING = re.compile(r"^BREAKING[ -]CHANGE: ", re.MULTILINE)
_HEADING = re.compile(r"^##\s+\[?v?(?P<version>[^\]\s]+)\]?", re.MULTILINE)


class Bump:
    """Bump levels, comparable: ``NONE < PATCH < MINOR < MAJOR``."""

    NONE, PATCH, MINOR, MAJOR = 0, 1, 2, 3
    NAMES = ("no", "patch", "minor", "major")


def bump_of(message: str, *, pre_1_0: bool = False) -> int:
    """The :class:`Bump` level a conventional commit message asks for; with ``pre_1_0``
    a breaking change asks for a minor bump."""
    match = _HEADER.match(message)
    if match is None:
        return Bump.NONE
    if match.group("bang") or _BREAKING.search(message):
        return Bump.MINOR if pre_1_0 else Bump.MAJOR
    kind = match.group("type").lower()
    if kind == "feat":
        return Bump.MINOR
    if kind in ("fix", "perf"):
        return Bump.PATCH
    return Bump.NONE


def changelog_releases(text: str) -> list[str]:
    """The release versions of a changelog's ``##`` headings, newest (topmost) first."""
    return [
        m.group("version")
        for m in _HEADING.finditer(text)
        if m.group("version").lower() != "unreleased"
    ]


def _bumped(version: semver.Version, level: int) -> semver.Version:
    if level == Bump.MAJOR:
        return version.bump_major()
    if level == Bump.MINOR:
        return version.bump_minor()
    if level == Bump.PATCH:
        return version.bump_patch()
    return version


class VersionSyncPolicy(GovernorPolicy):
    """The ``policy:`` of the version-sync governor (paths relative to the checkout)."""

    pyproject: str = "pyproject.toml"
    package_json: str = "package.json"
    changelog: str = "CHANGELOG.md"
    #: A missing changelog is a violation.
    require_changelog: bool = True
    #: Compare the version with the last tag and the commits since it.
    check_bump: bool = True
    #: Commits that ask for a bump must come with one (false: bump at release time).
    require_bump: bool = True
    #: Before 1.0.0 a breaking change bumps the minor version, not the major.
    major_version_zero: bool = True
    #: Tags are the version with this prefix (a tag without it is read as well).
    tag_prefix: str = "v"


@dataclass
class _Found:
    file: str
    text: str


class VersionSyncAgent(Governor[VersionSyncPolicy]):
    """Checks that versions are valid semver, agree, are in the changelog and are bumped
    as the conventional commits since the last tag ask."""

    manifest_file = "version-sync"
    violation_code = "governor.version_sync_violation"
    policy_model = VersionSyncPolicy

    def check(self, inp: GovernorInput, policy: VersionSyncPolicy, report: Report) -> None:
        """Read the checkout's versions and apply the rules."""
        with workspace(inp) as ws:
            report.sha = ws.head  # the commit actually checked
            self._check(ws, policy, report)

    def _check(self, ws: Workspace, policy: VersionSyncPolicy, report: Report) -> None:
        found = [
            f
            for f in (
                self._pyproject(ws.path, policy, report),
                self._package(ws.path, policy, report),
            )
            if f
        ]
        changelog_path = ws.path / policy.changelog
        releases = (
            changelog_releases(changelog_path.read_text(encoding="utf-8", errors="replace"))
            if changelog_path.is_file()
            else None
        )
        if not found and releases:
            found.append(_Found(policy.changelog, releases[0]))
        if not found:
            report.add(
                "version files",
                False,
                f"none of {policy.pyproject}, {policy.package_json} and {policy.changelog} "
                "holds a version",
                f'declare the version, e.g. `version = "0.1.0"` under `[project]` in '
                f"{policy.pyproject}, and add a `## [0.1.0]` entry to {policy.changelog}.",
            )
            return
        report.add("version files", True, ", ".join(f"{f.file}: `{f.text}`" for f in found))
        versions = self._valid(found, report)
        if versions is None:
            return
        version = versions[0][1]
        if len({str(v) for _, v in versions}) > 1:
            said = ", ".join(f"{file} says `{v}`" for file, v in versions)
            highest = max(v for _, v in versions)
            report.add(
                "versions agree",
                False,
                said,
                f"set the same version in every file, e.g. `{highest}` in "
                + ", ".join(file for file, _ in versions)
                + ".",
            )
            return
        report.add("versions agree", True, f"all say `{version}`")
        self._changelog(releases, version, policy, report)
        if policy.check_bump:
            self._bump(ws, version, policy, report)

    def _pyproject(self, root: Path, policy: VersionSyncPolicy, report: Report) -> _Found | None:
        path = root / policy.pyproject
        if not path.is_file():
            return None
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            report.add(
                "version files",
                False,
                f"{policy.pyproject} is not valid TOML: {exc}",
                f"fix the syntax of {policy.pyproject}.",
            )
            return None
        project = _table(data.get("project"))
        if "version" in (project.get("dynamic") or []):
            report.skip(
                "version files", f"{policy.pyproject}: the version is dynamic (not compared)"
            )
            return None
        version = project.get("version") or _table(_table(data.get("tool")).get("poetry")).get(
            "version"
        )
        return _Found(policy.pyproject, str(version)) if version is not None else None

    def _package(self, root: Path, policy: VersionSyncPolicy, report: Report) -> _Found | None:
        path = root / policy.package_json
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            report.add(
                "version files",
                False,
                f"{policy.package_json} is not valid JSON: {exc}",
                f"fix the syntax of {policy.package_json}.",
            )
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return _Found(policy.package_json, str(version)) if version is not None else None

    def _valid(
        self, found: list[_Found], report: Report
    ) -> list[tuple[str, semver.Version]] | None:
        parsed, bad = [], []
        for f in found:
            try:
                parsed.append((f.file, semver.Version.parse(str(f.text))))
            except ValueError:
                bad.append(f)
        if bad:
            report.add(
                "semver",
                False,
                ", ".join(f"{f.file}: `{f.text}` is not a semantic version" for f in bad),
                "write versions as MAJOR.MINOR.PATCH with an optional pre-release, e.g. "
                "`1.4.0` or `1.4.0-rc.1`, without a `v` (see https://semver.org).",
            )
            return None
        report.add("semver", True, "every version is a valid semantic version")
        return parsed

    def _changelog(
        self,
        releases: list[str] | None,
        version: semver.Version,
        policy: VersionSyncPolicy,
        report: Report,
    ) -> None:
        rule = "changelog entry"
        entry = f"`## [{version}] - YYYY-MM-DD`"
        if releases is None:
            if policy.require_changelog:
                report.add(
                    rule,
                    False,
                    f"there is no {policy.changelog}",
                    f"add {policy.changelog} with a {entry} section listing the changes "
                    "(https://keepachangelog.com).",
                )
            else:
                report.skip(rule, f"there is no {policy.changelog} (not required)")
            return
        if releases and releases[0] == str(version):
            report.add(rule, True, f"{policy.changelog}'s newest release is `{version}`")
            return
        newest = f"its newest release is `{releases[0]}`" if releases else "it has no release"
        report.add(
            rule,
            False,
            f"{policy.changelog} has no entry on top for `{version}`: {newest}",
            f"add a {entry} section above the older releases of {policy.changelog}, "
            "listing what changed.",
        )

    def _bump(
        self, ws: Workspace, version: semver.Version, policy: VersionSyncPolicy, report: Report
    ) -> None:
        rule = "version bump"
        tag = ws.last_tag()
        if tag is None:
            report.skip(rule, "no tag yet: the first release has nothing to compare with")
            return
        try:
            tagged = semver.Version.parse(
                tag.removeprefix(policy.tag_prefix) if policy.tag_prefix else tag
            )
        except ValueError:
            report.skip(rule, f"the last tag `{tag}` is not a semantic version")
            return
        commits = ws.commits(tag)
        report.metrics["commits_since_tag"] = float(len(commits))
        pre_1_0 = policy.major_version_zero and tagged.major == 0
        asking: list[tuple[int, Commit]] = [
            (bump_of(c.message, pre_1_0=pre_1_0), c) for c in commits
        ]
        expected = max((level for level, _ in asking), default=Bump.NONE)
        why = ", ".join(f"`{c.subject}` ({c.short})" for level, c in asking if level == expected)[
            :600
        ]
        target = _bumped(tagged, expected)
        release = version.finalize_version()
        if version < tagged:
            report.add(
                rule,
                False,
                f"`{version}` is lower than the last tag `{tag}`",
                f"set a version above `{tagged}`: `{target if expected else tagged.bump_patch()}`.",
            )
        elif version == tagged:
            if expected == Bump.NONE:
                report.add(
                    rule, True, f"unchanged since `{tag}`; no commit since asks for a release"
                )
            elif not policy.require_bump:
                report.skip(
                    rule,
                    f"commits since `{tag}` ask for a {Bump.NAMES[expected]} bump "
                    "(left for the release: require_bump is off)",
                )
            else:
                report.add(
                    rule,
                    False,
                    f"the commits since `{tag}` ask for a {Bump.NAMES[expected]} bump to "
                    f"`{target}` ({why}), but the version is still `{version}`",
                    f"set the version to `{target}` in every version file and add a "
                    f"`## [{target}]` entry to {policy.changelog}.",
                )
        elif release == target:
            report.add(
                rule,
                True,
                f"`{tag}` → `{version}`: the {Bump.NAMES[expected]} bump the commits ask for",
            )
        else:
            asked = (
                f"a {Bump.NAMES[expected]} bump to `{target}` ({why})"
                if expected
                else "no bump (no feat, fix, perf or breaking commit)"
            )
            report.add(
                rule,
                False,
                f"`{tag}` → `{version}`, but the commits since `{tag}` ask for {asked}",
                (
                    f"set the version to `{target}`"
                    if expected
                    else f"keep `{tagged}`, or describe the release-worthy change in a "
                    "conventional commit (`feat: ...`, `fix: ...`)"
                )
                + f", in every version file and in {policy.changelog}.",
            )


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
