"""Demand estimation: arrivals per hour as a function of the fee, learnt from all the evidence.

Pure, no clock. The model: at fee f a channel is asked to forward a Poisson stream of
rate(f) = rate_ref * exp(-(f - f_ref) / s) per hour, where s is the channel's *price scale*
(with no base fee, revenue rate(f) * f peaks at f = s) and f_ref the fee the evidence is
centred on. The posterior over s is kept on a log grid (SCALES_PPM); for each s the rate at
f_ref has a Gamma posterior in closed form, so the likelihood of every grid point is exact:

    log p(data | s) = lgamma(a + N) - (a + N) log(b + E(s)) - F / s   (+ const)
    N = sum n_i,  E(s) = sum h_i exp(-(f_i - f_ref) / s),  F = sum n_i (f_i - f_ref)

(`growth`, below, bounds it).

over the observations (fee f_i, exposure hours h_i, arrivals n_i) of modules.evidence.
Observations far from f_ref (in log fee) weigh less (LOCALITY_SIGMA): the exponential is a
local description of a curve that may have a cliff. For the same reason its growth below
f_ref is bounded (MAX_GROWTH_BELOW): a tiny price scale would otherwise promise demand
without limit at lower fees, and a posterior-mean curve whose unlikely components promise
e^40 times the demand is priced by them alone. With the bound the likelihood reads

    log p(data | s) = lgamma(a + N) - (a + N) log(b + E(s)) + sum n_i g_s(f_i)
    g_s(f) = min((f_ref - f) / s, log MAX_GROWTH_BELOW),  E(s) = sum h_i exp(g_s(f_i))

Where a channel's own evidence is thin, the node's other channels inform it
(`node_priors`): each channel's prior on log s is a normal around the precision-weighted
mean of the other channels' estimates (leave-one-out), as wide as channels are seen to
differ (BETWEEN_CHANNELS_SIGMA), mixed with a broad prior around the fees the channel has
had, so one odd channel cannot pin the rest.

Where gossip says what other nodes charge into the same peer (modules.network_prior), that
prior is in turn mixed: NETWORK_SHARE a normal on log s around the network's median fee
(NETWORK_SIGMA wide), the rest the prior above. A channel with little evidence starts from
what the network charges; its own evidence overrides it as it accumulates.
"""
import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from modules.evidence import Evidence

# price scales s (ppm) the posterior lives on: 1 .. ~20 000, 15% apart
SCALES_PPM: Tuple[float, ...] = tuple(1.15 ** k for k in range(0, 72))
LOG_SCALES = tuple(math.log(s) for s in SCALES_PPM)
RATE_PRIOR_SHAPE = 0.5          # Gamma prior of the rate at f_ref: as weak as half an arrival
RATE_PRIOR_HOURS = 1.0          # ... seen over one hour
BROAD_PRIOR_SIGMA = math.log(5)  # own prior: s within 5x of the fees it had (one sigma)
BETWEEN_CHANNELS_SIGMA = 1.0     # how far apart a node's channels' scales are (log)
BROAD_SHARE = 0.25               # the broad prior's share when the node informs the channel
NETWORK_SIGMA = math.log(3)      # the price scale within 3x of the network's median fee (one sigma)
NETWORK_SHARE = 0.75             # the network prior's share where gossip says enough
LOCALITY_SIGMA = math.log(3)     # evidence at 3x the reference fee weighs exp(-1/2)
INFORMATIVE_SD = 0.8             # a posterior narrower than this (log sd) informs the others
# demand at fees below f_ref is at most this many times the demand at f_ref (per price scale;
# on 8 seeds, 20 lowered the high market's worst seed by 3-5 points, 100 did not)
MAX_GROWTH_BELOW = 100.0
LOG_MAX_GROWTH = math.log(MAX_GROWTH_BELOW)


def growth(fee_below_reference_ppm: float, scale_ppm: float) -> float:
    """log(rate(f) / rate(f_ref)) for f = f_ref - fee_below_reference_ppm, bounded above."""
    x = fee_below_reference_ppm / scale_ppm
    return x if x < LOG_MAX_GROWTH else LOG_MAX_GROWTH


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


@dataclasses.dataclass(frozen=True)
class DemandCurve:
    """The posterior: a mixture over price scales of exponential demand curves."""
    reference_fee_ppm: int
    scales_ppm: Tuple[float, ...]
    weights: Tuple[float, ...]
    log_rates_at_reference: Tuple[float, ...]   # log posterior-mean rate at f_ref, per scale
    mean_amount_msat: int
    arrivals: int                                # evidence behind it (unweighted count)

    def rate_per_hour(self, fee_ppm: float) -> float:
        below = self.reference_fee_ppm - fee_ppm
        return sum(w * math.exp(lr + growth(below, s))
                   for s, w, lr in zip(self.scales_ppm, self.weights, self.log_rates_at_reference))

    def rates_per_hour(self, fees_ppm: Sequence[float]) -> List[float]:
        """rate_per_hour at each fee, the same arithmetic in one pass (the fee grid's hot loop)."""
        exp, ref, cap = math.exp, self.reference_fee_ppm, LOG_MAX_GROWTH
        terms = tuple(zip(self.scales_ppm, self.weights, self.log_rates_at_reference))
        rates = []
        for fee in fees_ppm:
            below = ref - fee
            total = 0.0
            for s, w, lr in terms:
                x = below / s      # growth(below, s), inlined: this is a fee cycle's hot loop
                total += w * exp(lr + (x if x < cap else cap))
            rates.append(total)
        return rates

    def quantile_scale_ppm(self, q: float) -> float:
        acc = 0.0
        for s, w in zip(self.scales_ppm, self.weights):
            acc += w
            if acc >= q:
                return s
        return self.scales_ppm[-1]

    def log_scale_sd(self) -> float:
        mean, var = _moments(self.scales_ppm, self.weights)
        return math.sqrt(var)

    def at_scale(self, scale_ppm: float) -> "DemandCurve":
        """The single curve of one price scale, its rate as the posterior has it."""
        i = min(range(len(self.scales_ppm)), key=lambda k: abs(self.scales_ppm[k] - scale_ppm))
        return dataclasses.replace(self, scales_ppm=(self.scales_ppm[i],), weights=(1.0,),
                                   log_rates_at_reference=(self.log_rates_at_reference[i],))

    def describe(self) -> str:
        lo, mid, hi = (self.quantile_scale_ppm(q) for q in (0.1, 0.5, 0.9))
        rate = self.rate_per_hour(self.reference_fee_ppm)
        return (f"demand {rate:.2f}/h at {self.reference_fee_ppm} ppm from {self.arrivals} arrivals; "
                f"price scale ~{mid:.0f} ppm (80%: {lo:.0f}-{hi:.0f})")


def _moments(scales: Sequence[float], weights: Sequence[float]) -> Tuple[float, float]:
    logs = [math.log(s) for s in scales]
    mean = sum(w * x for w, x in zip(weights, logs))
    return mean, max(0.0, sum(w * (x - mean) ** 2 for w, x in zip(weights, logs)))


@dataclasses.dataclass(frozen=True)
class ScaleLikelihood:
    """What a channel's own evidence says about its price scale (before any prior)."""
    reference_fee_ppm: int
    log_likelihood: Tuple[float, ...]            # per SCALES_PPM
    log_rates: Tuple[float, ...]                 # log posterior-mean rate at f_ref, per scale
    anchor_log_fee: float                        # exposure-weighted mean log fee it had
    evidence: Evidence


def locality(fee_ppm: float, reference_fee_ppm: float) -> float:
    d = math.log(max(fee_ppm, 1) / max(reference_fee_ppm, 1))
    return math.exp(-d * d / (2 * LOCALITY_SIGMA ** 2))


def scale_likelihood(evidence: Evidence, reference_fee_ppm: int) -> ScaleLikelihood:
    obs = [(o.fee_ppm, o.hours * locality(o.fee_ppm, reference_fee_ppm),
            o.arrivals * locality(o.fee_ppm, reference_fee_ppm)) for o in evidence.observations]
    obs = [(reference_fee_ppm - f, h, n) for f, h, n in obs if h > 0]
    n_total = sum(n for _, _, n in obs)
    a = RATE_PRIOR_SHAPE + n_total
    lgamma_a, log_a = math.lgamma(a), math.log(a)
    loglik, log_rates = [], []
    for s in SCALES_PPM:
        gs = [(growth(below, s), h, n) for below, h, n in obs]
        e = sum(h * math.exp(g) for g, h, _ in gs)      # exposure weighted by the curve
        log_den = math.log(RATE_PRIOR_HOURS + e)
        loglik.append(lgamma_a - a * log_den + sum(n * g for g, _, n in gs))
        log_rates.append(log_a - log_den)
    hours = sum(o.hours for o in evidence.observations)
    anchor = (sum(o.hours * math.log(max(o.fee_ppm, 1)) for o in evidence.observations) / hours
              if hours > 0 else math.log(max(reference_fee_ppm, 1)))
    return ScaleLikelihood(reference_fee_ppm, tuple(loglik), tuple(log_rates), anchor, evidence)


def _normal_log_prior(mean: float, sigma: float) -> List[float]:
    return [-(x - mean) ** 2 / (2 * sigma * sigma) for x in LOG_SCALES]


def _mix(log_a: Sequence[float], log_b: Sequence[float], share_b: float) -> List[float]:
    """log((1 - share_b) * A/|A| + share_b * B/|B|), each normalised over the grid."""
    ta, tb = max(log_a), max(log_b)
    a = [math.exp(x - ta) for x in log_a]
    b = [math.exp(y - tb) for y in log_b]
    na, nb = sum(a), sum(b)
    return [math.log(max((1 - share_b) * x / na + share_b * y / nb, 1e-300)) for x, y in zip(a, b)]


def own_prior(lik: ScaleLikelihood) -> List[float]:
    """Broad: the price scale is probably within a few times the fees the channel had."""
    return _normal_log_prior(lik.anchor_log_fee, BROAD_PRIOR_SIGMA)


def _posterior_weights(log_prior: Sequence[float], lik: ScaleLikelihood) -> List[float]:
    logs = [p + l for p, l in zip(log_prior, lik.log_likelihood)]
    top = max(logs)
    raw = [math.exp(x - top) for x in logs]
    total = sum(raw)
    return [w / total for w in raw]


def node_priors(likelihoods: Mapping[str, ScaleLikelihood]) -> Dict[str, List[float]]:
    """Each channel's log prior over SCALES_PPM, informed by the node's other channels."""
    summaries: Dict[str, Tuple[float, float]] = {}
    for key, lik in likelihoods.items():
        mean, var = _moments(SCALES_PPM, _posterior_weights(own_prior(lik), lik))
        if math.sqrt(var) < INFORMATIVE_SD:
            summaries[key] = (mean, var + BETWEEN_CHANNELS_SIGMA ** 2)
    precision = sum(1 / v for _, v in summaries.values())
    weighted = sum(m / v for m, v in summaries.values())
    priors = {}
    for key, lik in likelihoods.items():
        p, w = precision, weighted
        if key in summaries:                       # leave its own estimate out
            m, v = summaries[key]
            p, w = p - 1 / v, w - m / v
        broad = own_prior(lik)
        if p <= 1e-12:
            priors[key] = broad
            continue
        node = _normal_log_prior(w / p, math.sqrt(BETWEEN_CHANNELS_SIGMA ** 2 + 1 / p))
        priors[key] = _mix(node, broad, BROAD_SHARE)
    return priors


def posterior(lik: ScaleLikelihood, log_prior: Sequence[float]) -> DemandCurve:
    weights = _posterior_weights(log_prior, lik)
    keep = [i for i, w in enumerate(weights) if w > 1e-4]   # the rest changes nothing
    total = sum(weights[i] for i in keep)
    return DemandCurve(lik.reference_fee_ppm, tuple(SCALES_PPM[i] for i in keep),
                       tuple(weights[i] / total for i in keep),
                       tuple(lik.log_rates[i] for i in keep),
                       lik.evidence.mean_amount_msat, lik.evidence.arrivals)


def with_network_prior(log_prior: Sequence[float], network_fee_ppm: int) -> List[float]:
    """The prior, mixed with a normal on log s around what the network charges the peer."""
    network = _normal_log_prior(math.log(max(network_fee_ppm, 1)), NETWORK_SIGMA)
    return _mix(network, log_prior, 1 - NETWORK_SHARE)


def estimate_all(evidence_by_key: Mapping[str, Evidence], fee_by_key: Mapping[str, int],
                 network_fee_by_key: Optional[Mapping[str, int]] = None) -> Dict[str, DemandCurve]:
    """Every channel's (or peer's) demand curve, each informed by the others and, where
    given, by the network's median fee into its peer (network_fee_by_key)."""
    liks = {k: scale_likelihood(e, fee_by_key[k]) for k, e in evidence_by_key.items()}
    priors = node_priors(liks)
    for k, fee in (network_fee_by_key or {}).items():
        if k in priors:
            priors[k] = with_network_prior(priors[k], fee)
    return {k: posterior(lik, priors[k]) for k, lik in liks.items()}
