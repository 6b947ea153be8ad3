"""The true-curves diagnostic (bench/bench_true_curves.py) hands the fee stages the market's
own curve: priced with liquidity to spare, it must land on that curve's best fee."""
import importlib.util
import math
import os

from modules import liquidity
from simnode.market import ExponentialDemand, LogisticDemand, best_fee

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench_true_curves.py")
_spec = importlib.util.spec_from_file_location("bench_true_curves", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_true_curve_is_priced_at_its_own_best_fee():
    for true in (ExponentialDemand(2.0, 700.0), LogisticDemand(3.0, 300.0, 40.0)):
        curve = bench.TrueCurve(100, (1.0,), (1.0,), (0.0,), 50_000_000, 10, true=true)
        assert curve.log_scale_sd() == 0.0 and curve.rate_per_hour(250) == true.per_hour(250)
        grid = liquidity.DemandOnGrid.of(curve, liquidity.fee_grid(1, 5000))
        price = liquidity.price_liquidity(grid, liquidity.Supply(10**15, 0, 72), 0, True)
        peak = best_fee(true, 1, 5000)
        assert not price.scarce and abs(math.log(price.fee_ppm / peak)) < math.log(1.07), (price.fee_ppm, peak)
