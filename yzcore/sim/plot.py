"""A health timeline as a small SVG: no plotting library, nothing to install."""

from __future__ import annotations

from yzcore.sim.scenarios import Verdict

__all__ = ["svg"]

W, H, PAD = 720, 300, 40


def svg(verdict: Verdict) -> str:
    """Healthy share (green, left axis 0–100%) and mean connections (blue, right axis) over time."""
    points = verdict.timeline or [(0.0, 0.0, 0.0)]
    t_max = max(p[0] for p in points) or 1.0
    c_max = max(8.0, max(p[2] for p in points))

    def xy(t: float, v: float, top: float) -> str:
        return f"{PAD + (W - 2 * PAD) * t / t_max:.1f},{H - PAD - (H - 2 * PAD) * v / top:.1f}"

    share = " ".join(xy(t, s, 1.0) for t, s, _ in points)
    conns = " ".join(xy(t, c, c_max) for t, _, c in points)
    title = (f"{verdict.scenario} ({verdict.criteria}): {'PASS' if verdict.passed else 'FAIL'}, "
             f"digest {verdict.digest}")
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{PAD}" y="20">{title}</text>
<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>
<text x="{PAD}" y="{H - 12}">0 s</text><text x="{W - PAD - 40}" y="{H - 12}">{t_max:.0f} s</text>
<text x="4" y="{PAD + 4}" fill="#186b1b">100%</text><text x="{W - PAD + 4}" y="{PAD + 4}" fill="#1f4e9c">{c_max:.0f}</text>
<polyline points="{share}" fill="none" stroke="#186b1b" stroke-width="2"/>
<polyline points="{conns}" fill="none" stroke="#1f4e9c" stroke-width="1.5"/>
<text x="{PAD + 10}" y="{PAD + 16}" fill="#186b1b">healthy share</text>
<text x="{PAD + 120}" y="{PAD + 16}" fill="#1f4e9c">mean connections</text>
</svg>
"""
