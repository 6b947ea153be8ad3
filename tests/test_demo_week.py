"""The demo's simulated week (demo.py part 2): the plugin with sling against the same
market left alone, on a short market so it stays fast."""
import contextlib
import io
import re

import pytest
from matplotlib.image import imread

import demo
from simnode.market import HOUR, SAT, build_market, history_snapshot
from simnode.market_baselines import static_run
from simnode.market_run import run_plugin


def short_market():
    """A day of 5 channels that drain: the plugin moves fees and rebalances in it."""
    return build_market("high", 1, days=1, history_days=1, channels=5)


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    """The demo's week part on the short market: (its Week, what it printed, the plot)."""
    plot = tmp_path_factory.mktemp("week") / "week.png"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        week = demo.show_week(short_market(), str(plot))
    return week, printed.getvalue(), plot


def sats(text: str) -> int:
    return int(text.replace(",", ""))


def test_week_table_totals_are_the_runs_totals_and_the_plot_is_a_png(shown):
    week, out, plot = shown
    market = short_market()

    # the same runs made apart from the demo (runs repeat exactly on a market)
    run = run_plugin(market, sling=True)
    start = history_snapshot(market)
    before = sum(start.earned_msat)
    alone = static_run(market, [(c.start_fee_ppm, c.start_fee_ppm) for c in market.channels], start)
    alone_msat = sum(alone.earned_msat) - before
    assert run.rebalance_fee_msat > 0 and any(run.broadcasts)   # the plugin did act

    total = next(line for line in out.splitlines() if line.startswith("total"))
    m = re.search(r"\|\s*([\d,]+)\s+([\d,]+)\s+(-?[\d,]+)\s*\|\s*([\d,]+)\s+plugin net = (-?[\d.]+)x", total)
    assert m, total
    earned, paid, net, left = (sats(g) for g in m.groups()[:4])
    assert earned == round(sum(run.earned_msat) / SAT)
    assert paid == round(run.rebalance_fee_msat / SAT)
    assert net == round(run.net_msat / SAT)
    assert left == round(alone_msat / SAT)
    assert float(m.group(5)) == pytest.approx(run.net_msat / alone_msat, abs=0.005)
    # one row per channel, with the plugin's last fee and its broadcasts per day
    for x, c in enumerate(market.channels):
        row = next(line for line in out.splitlines() if line.startswith(c.scid))
        fees = re.search(r"(\d+) -> (\d+)", row)
        assert (int(fees.group(1)), int(fees.group(2))) == (c.start_fee_ppm, run.fee_timeline[x][-1][1])
        assert f"{len(run.broadcasts[x]) / market.days:.2f}" in row
    # rebalance spend per channel adds up to what sling was paid
    assert sum(c.rebalance_fee_msat for c in week.channels) == run.rebalance_fee_msat

    assert f"plot: {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(plot)                      # decodes the whole image (height, width, RGBA)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    assert pixels.std() > 0.05                 # something is drawn on it


def test_revenue_over_time_ends_at_the_totals_and_changes_no_result(shown):
    week = shown[0]
    market, run = week.market, week.plugin
    hours = int(market.run_s // HOUR)
    for series in (run.earnings, week.alone_series()):
        assert [t for t, _ in series] == [h * HOUR for h in range(hours + 1)]
        assert series[0] == (0.0, 0)
        assert all(a[1] <= b[1] for a, b in zip(series, series[1:]))     # earnings only grow
    assert run.earnings[-1][1] == sum(run.earned_msat)
    assert week.alone_series()[-1][1] == week.alone_earned_msat
    assert run.net_series()[-1][1] == run.net_msat
    # recording the series changes nothing the market plays
    plan = [(c.start_fee_ppm, c.start_fee_ppm) for c in market.channels]
    plain = static_run(market, plan)
    recorded = static_run(market, plan, earnings_every_s=HOUR)
    assert (plain.totals(), plain.local_msat) == (recorded.totals(), recorded.local_msat)


def test_week_flags_exclude_each_other():
    with pytest.raises(SystemExit):
        demo.main(["--skip-week", "--week-only"])


def test_week_figures_for_the_budget_and_the_gossip_limits(shown):
    week, out, _ = shown
    run = week.plugin
    day = 86400
    # the most paid in any 24 h, by brute force over windows ending at each payment
    brute = max(sum(f for t, f in run.payments if end - day < t <= end) for end, _ in run.payments)
    assert week.most_paid_in_24h_msat() == brute <= week.daily_budget_sats * SAT
    per_day = max(sum(1 for t in ts if int(t // day) == d) for ts in run.broadcasts for d in range(2))
    assert week.most_broadcasts_in_a_day() == per_day
    assert f"most of one channel in one day {per_day}" in out
    assert f"budget {week.daily_budget_sats:,} a day" in out
