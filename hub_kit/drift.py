"""Flag a site whose inputs look unlike the others': a different crop, window or inversion.

Each bundle of a weight round carries a summary of its inputs (``InputSummary``: channel
means and spreads, a brightness histogram and a histogram of stored image sizes, after the
plan's scaling and before normalisation). A site is compared with each other site, and its
**distance** is the smallest over them (a site is flagged only when it is unlike every
other, so one odd site does not make the others look odd), each the largest of (spreads
below a tenth of the largest channel's count as that tenth, so a border pixel or a rarely
set column that barely varies cannot dominate):

- the standardised mean difference of any channel, ``|m_site - m_rest| / s``, where ``s`` is
  the root mean square of the two standard deviations (Cohen's d);
- ``|ln(sd_site / sd_rest)|`` of any channel (contrast);
- twice the total-variation distance between the brightness histograms;
- twice the total-variation distance between the stored-size histograms.

Each term is about 1 for a difference a person would see at a glance (an inverted image
gives a mean difference of several spreads; a crop at another zoom moves the size histogram
entirely). Different class mixes move channel means too, but by a fraction of a spread,
which is why the default threshold is 1.0 (``--drift-threshold``, a hub setting). With two
sites both are as far from each other; the hint then says so. What differs is said against
the other sites pooled. Withheld histogram bins (below the minimum cell size) count as
empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flsilo.format.manifest import InputSummary

DEFAULT_THRESHOLD = 1.0
UNAVAILABLE = (
    "no input summary in this bundle (a DP federation's bundles carry none, nor do older ones)"
)


@dataclass(frozen=True)
class Drift:
    flagged: bool
    distance: float | None
    hint: str

    def to_dict(self) -> dict[str, object]:
        return {"flagged": self.flagged, "distance": self.distance, "hint": self.hint}


def _pool(summaries: list[InputSummary]) -> InputSummary | None:
    total = sum(s.samples for s in summaries)
    if not summaries or total == 0:
        return None
    width = len(summaries[0].channel_mean)
    if any(len(s.channel_mean) != width for s in summaries):
        return None
    mean = [sum(s.channel_mean[c] * s.samples for s in summaries) / total for c in range(width)]
    second = [
        sum((s.channel_std[c] ** 2 + s.channel_mean[c] ** 2) * s.samples for s in summaries) / total
        for c in range(width)
    ]
    std = [math.sqrt(max(second[c] - mean[c] ** 2, 0.0)) for c in range(width)]

    def hist(pick: str) -> tuple[int | None, ...]:
        rows = [getattr(s, pick) for s in summaries]
        if not rows or any(len(r) != len(rows[0]) for r in rows):
            return ()
        return tuple(sum(r[i] or 0 for r in rows) for i in range(len(rows[0])))

    return InputSummary(total, tuple(mean), tuple(std), hist("brightness"), hist("sizes"))


def _tv(a: tuple[int | None, ...], b: tuple[int | None, ...]) -> float:
    pa = [x or 0 for x in a]
    pb = [x or 0 for x in b]
    ta, tb = sum(pa), sum(pb)
    if not a or len(a) != len(b) or ta == 0 or tb == 0:
        return 0.0
    return 0.5 * sum(abs(x / ta - y / tb) for x, y in zip(pa, pb, strict=True))


def _mean_size(h: tuple[int | None, ...]) -> float:
    """The mean bin of a histogram (0 for an empty one)."""
    counts = [x or 0 for x in h]
    total = sum(counts)
    return sum(i * c for i, c in enumerate(counts)) / total if total else 0.0


def compare(site: InputSummary, rest: InputSummary) -> tuple[float, list[str]]:
    """The distance of ``site`` from ``rest`` and the words for what differs most."""
    terms: list[tuple[float, str]] = []
    # a channel or feature that barely varies (an image border, a rarely set column) would
    # make any difference look huge: spreads count as at least a tenth of the largest
    floor = 0.1 * max((*site.channel_std, *rest.channel_std, 1e-12))
    for c, (m1, m0, s1, s0) in enumerate(
        zip(site.channel_mean, rest.channel_mean, site.channel_std, rest.channel_std, strict=True)
    ):
        s1, s0 = max(s1, floor), max(s0, floor)
        spread = math.sqrt((s1 * s1 + s0 * s0) / 2)
        where = f" in channel {c}" if len(site.channel_mean) > 1 else ""
        terms.append((abs(m1 - m0) / spread, ("brighter" if m1 > m0 else "darker") + where))
        if s1 > floor or s0 > floor:
            terms.append(
                (
                    abs(math.log(s1 / s0)),
                    ("higher" if s1 > s0 else "lower") + " in contrast" + where,
                )
            )
    shift = _mean_size(site.brightness) - _mean_size(rest.brightness)  # in eighths
    exposed = "brighter" if shift > 0.25 else "darker" if shift < -0.25 else "differently exposed"
    terms.append((2 * _tv(site.brightness, rest.brightness), exposed))
    size_gap = 2 * _tv(site.sizes, rest.sizes)
    bigger = _mean_size(site.sizes) > _mean_size(rest.sizes)
    terms.append((size_gap, "larger" if bigger else "smaller"))
    terms.sort(key=lambda t: t[0], reverse=True)
    words: list[str] = []
    for value, text in terms:
        if value >= 0.5 and text not in words:
            words.append(text)
    return terms[0][0], words[:2]


def drift_flags(
    summaries: dict[str, InputSummary | None], threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Drift]:
    """Per site: its distance from the other sites' pooled summary, flagged over ``threshold``."""
    out: dict[str, Drift] = {}
    known = {site: s for site, s in summaries.items() if s is not None}
    for site, summary in summaries.items():
        if summary is None:
            out[site] = Drift(False, None, UNAVAILABLE)
            continue
        others = [s for other, s in known.items() if other != site]
        # only summaries of the same width compare (an earlier flsilo summarised an npz
        # of images per value, a folder of the same images per channel)
        alike = [s for s in others if len(s.channel_mean) == len(summary.channel_mean)]
        rest = _pool(alike)
        if rest is None:
            out[site] = Drift(False, None, _nothing_to_compare(summary, others))
            continue
        # unlike every other site, not merely unlike a pool that holds an odd one
        distance = round(min(compare(summary, o)[0] for o in alike), 4)
        words = compare(summary, rest)[1]
        if distance <= threshold:
            out[site] = Drift(False, distance, "like the other sites' inputs")
            continue
        what = " and ".join(words) or "unlike"
        noun = "images" if summary.brightness else "inputs"
        who = "the other site's" if len(alike) == 1 else "the others'"
        out[site] = Drift(
            True,
            distance,
            f"{site}'s {noun} are {what} than {who} (distance {distance:.2f} > {threshold:g}): "
            "check its crop, window or inversion against the plan's preprocessing "
            "('flsilo site check-data --preview' at the site)",
        )
    return out


def _nothing_to_compare(summary: InputSummary, others: list[InputSummary]) -> str:
    """Why a site has no distance: no other summary, or none of the same width."""
    if not others:
        return "no other site's summary to compare with"
    widths = sorted({len(s.channel_mean) for s in others})
    return (
        f"not comparable: this summary has {len(summary.channel_mean)} channels or features, "
        f"the other sites' {' or '.join(map(str, widths))} (an earlier flsilo summarised "
        "an npz of images per value, a folder or CSV of images per channel): compare its inputs by hand "
        "('flsilo site check-data --preview' at each site)"
    )
