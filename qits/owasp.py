"""CWE → OWASP Top 10:2021 category, for the weaknesses our scanners report.

Source: the "List of Mapped CWEs" section of each category page of the OWASP
Top 10:2021 (https://owasp.org/Top10/, repository OWASP/Top10, files
``2021/docs/A0x_2021-*.md``). The table below copies those lists for every CWE
bandit 1.9 attaches to an issue (``bandit.core.issue.Cwe``) plus CWE-798, which
we give detect-secrets findings, and a few neighbours of those CWEs. A CWE that
OWASP maps to no category (bandit's CWE-155, 400, 605, 703, 732 and 838) maps to
``None`` rather than to a guess.

Hard-coded secrets: OWASP lists CWE-798 *Use of Hard-coded Credentials* and
CWE-259 *Use of Hard-coded Password* under A07:2021 Identification and
Authentication Failures; only CWE-321 *Use of Hard-coded Cryptographic Key* is
under A02:2021 Cryptographic Failures. So a leaked AWS key is A07.
"""

from __future__ import annotations

A01 = "A01:2021-Broken Access Control"
A02 = "A02:2021-Cryptographic Failures"
A03 = "A03:2021-Injection"
A05 = "A05:2021-Security Misconfiguration"
A07 = "A07:2021-Identification and Authentication Failures"
A08 = "A08:2021-Software and Data Integrity Failures"
A09 = "A09:2021-Security Logging and Monitoring Failures"
A10 = "A10:2021-Server-Side Request Forgery (SSRF)"

CWE_TO_OWASP_2021: dict[int, str] = {
    # A01 — bandit: 22 path traversal, 284 access control, 377 insecure temp file
    22: A01,
    23: A01,
    59: A01,
    200: A01,
    276: A01,
    284: A01,
    285: A01,
    352: A01,
    377: A01,
    601: A01,
    862: A01,
    863: A01,
    # A02 — bandit: 319 cleartext transmission, 326 weak key, 327 broken crypto, 330 random
    310: A02,
    319: A02,
    321: A02,
    326: A02,
    327: A02,
    328: A02,
    330: A02,
    338: A02,
    916: A02,
    # A03 — bandit: 20 input validation, 78 OS command, 79/80 XSS, 89 SQL, 94 code injection
    20: A03,
    74: A03,
    77: A03,
    78: A03,
    79: A03,
    80: A03,
    88: A03,
    89: A03,
    90: A03,
    91: A03,
    94: A03,
    95: A03,
    116: A03,
    # A05
    16: A05,
    611: A05,
    614: A05,
    # A07 — bandit: 259 hard-coded password, 295 certificate validation; secrets: 798
    259: A07,
    287: A07,
    295: A07,
    297: A07,
    306: A07,
    798: A07,
    # A08 — bandit: 494 download without integrity check, 502 deserialization
    494: A08,
    502: A08,
    829: A08,
    # A09
    117: A09,
    532: A09,
    # A10
    918: A10,
}


def owasp_category(cwe: int | None) -> str | None:
    """The OWASP Top 10:2021 category OWASP maps ``cwe`` to, or None."""
    if cwe is None:
        return None
    return CWE_TO_OWASP_2021.get(cwe)
