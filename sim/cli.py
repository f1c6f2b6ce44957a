"""``wavefront sweep``: Monte-Carlo MSE/BER sweeps of channel estimators against the MMSE bound.

Under ``torchrun --nproc_per_node N -m wavefront sweep ...`` the ranks split every point's
batches (batch i on rank i % N) and rank 0 writes the results; with ``--rank R --world W``
(array jobs, no torchrun) each job writes ``partial-R-of-W.json`` into ``--out`` and
``wavefront merge-results OUT PARTIAL...`` combines them. Either way the results are those of
one process.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from wavefront.errors import ConfigError
from wavefront.estimators.registry import DEFAULT_LEARNED
from wavefront.utils import (DefaultsHelpFormatter, any_int, check_output_folder, nonnegative_int, parse_values,
                             positive_float, positive_int, seed_int, thread_count)

# the shipped learned model is the pilots-only gated LMMSE (the full-size AdaFortiTran loads by name)
DEFAULT_ESTIMATORS = f"ls-linear,lmmse-robust,lmmse-estimated,mmse-bayes,{DEFAULT_LEARNED},lmmse-genie"
# the robust LMMSE's options as the sweep takes them, and their defaults
ROBUST_DEFAULTS = {"robust_pdp": "uniform", "robust_doppler_spectrum": "flat", "robust_covariance": "assumed"}
SNR_DEFAULT = "0:30:5"  # sweep's --snr-db when not given


def add_commands(sub) -> None:
    p = sub.add_parser("sweep", help="MSE/NMSE/BER of estimators along SNR, Doppler or delay spread, with the MMSE bound",
                       description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--estimators", default=DEFAULT_ESTIMATORS,
                   help="comma list: ls-nearest, ls-linear, ls-spline, lmmse-robust, lmmse-genie, lmmse-estimated, "
                        "mmse-bayes, lmmse-bank, lmmse-genie-impaired, mmse-bayes-impaired, lmmse-oracle-support "
                        "(--profile sparse), perfect; under MIMO also lmmse-genie-per-pair, lmmse-estimated-per-pair, "
                        "mmse-bayes-per-pair, lmmse-sample, sionna-ls, sionna-lmmse-tf, sionna-lmmse-tfs; a learned "
                        "model with a shipped checkpoint (gated-lmmse, adafortitran, ...) or a checkpoint path")
    # default None, not SNR_DEFAULT: a user who types "--snr-db 0:30:5" has given it (build_spec resolves None)
    p.add_argument("--snr-db", default=None, help=f"per-RE SNR in dB: v, a,b,c or start:stop:step (default "
                   f"{SNR_DEFAULT}, or the --config's SNR when Doppler or delay spread is swept)")
    p.add_argument("--doppler-hz", default=None, help="maximum Doppler in Hz: v, a,b,c or start:stop:step "
                   "(default 1000, or the preset's)")
    p.add_argument("--delay-spread-ns", default=None, help="RMS delay spread in ns: v, a,b,c or start:stop:step "
                   "(default 300, or the preset's)")
    p.add_argument("--profile", default=None, help="3GPP profile: TDL A..E or CDL-A..CDL-E, or sparse (a few paths per "
                   "frame; default: the config's, A)")
    p.add_argument("--sparse-paths", type=any_int, default=None, metavar="N",
                   help="paths per frame of --profile sparse (channel.sparse_num_paths, 1..64; default 4)")
    p.add_argument("--config", default=None, help="YAML system config (ofdm:, channel:); CLI values override it")
    p.add_argument("--preset", default=None, help="named system config: default, adafortitran-paper, "
                   "adafortitran-reference, mimo-chest (16 antennas, 4 users, 14 x 624)")
    p.add_argument("--pilots", default=None, metavar="PRESET|FILE.json", help=_pilots_help())
    p.add_argument("--modulation", default=None, choices=["qpsk", "16qam", "64qam"], help="data modulation (default qpsk)")
    p.add_argument("--ici", action="store_true",
                   help="model inter-carrier interference: the channel varies within each symbol (time-domain path); "
                        "the label is each symbol's average channel, and the genie LMMSE and the bound treat ICI as noise")
    add_mimo_arguments(p)
    add_impairment_arguments(p)
    p.add_argument("--frames", type=positive_int, default=1000, help="frames per point (the maximum, with --min-bit-errors)")
    p.add_argument("--min-bit-errors", type=positive_int, default=None,
                   help="stop a point once every estimator has this many bit errors")
    p.add_argument("--min-frames", type=nonnegative_int, default=None, metavar="N",
                   help="with --min-bit-errors: a point never stops early before N frames (default 0; where the "
                        "--config draws a condition per frame, min(--frames, 256): one batch's Bayes risk is too rough)")
    p.add_argument("--batch-size", type=positive_int, default=500,
                   help="frames per batch (memory and speed); frames are seeded per (seed, point, batch), so another "
                        "batch size draws other frames: other, equally valid, figures")
    p.add_argument("--equalizer", default="zf", choices=["zf", "mmse"],
                   help="SISO one-tap equaliser (several antennas or users detect with LMMSE): zf, or mmse "
                        "rescaled to be unbiased, which makes the same hard "
                        "decisions as zf (the BER is the same; it differs only where the estimate is near 0)")
    p.add_argument("--error-variance", default="stated", choices=["stated", "model", "calibrated"],
                   help="MIMO detection: the error variance each estimate is detected with. stated (default): perfect "
                        "0, the genie its closed-form MSE, the others sigma^2 (Sionna's LS convention); model: as "
                        "stated, but lmmse-estimated the genie's closed-form MSE at its ML conditions, mmse-bayes its "
                        "posterior variance, lmmse-robust its MSE under its assumed covariance; calibrated: "
                        "each estimator's own MSE on a held-out batch at the point")
    p.add_argument("--robust-pdp", default=ROBUST_DEFAULTS["robust_pdp"], choices=["uniform", "exponential"],
                   help="power delay profile the robust LMMSE assumes (RMS = the top delay spread)")
    p.add_argument("--robust-doppler-spectrum", default=ROBUST_DEFAULTS["robust_doppler_spectrum"],
                   choices=["flat", "jakes"],
                   help="Doppler spectrum the robust LMMSE assumes, up to the top Doppler")
    p.add_argument("--robust-covariance", default=ROBUST_DEFAULTS["robust_covariance"],
                   choices=["assumed", "prior-average"],
                   help="robust LMMSE design: the assumed PDP and spectrum above, or the true profile's covariance "
                        "averaged over the prior ranges (the paper's training ranges widened to the sweep)")
    p.add_argument("--ldpc-rate", type=positive_float, default=None,
                   help="5G NR LDPC code rate: one codeword per frame, adds coded BER and BLER (slow on CPU)")
    p.add_argument("--conditions", default="estimated", choices=["estimated", "true"],
                   help="what estimators that read SNR, delay spread and Doppler (learned models; robust LMMSE reads "
                        "the noise level) are given: estimated from each frame's pilots, or the true values. "
                        "lmmse-genie and the bound always use the truth")
    add_prior_arguments(p)
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the frames (each point and batch its own stream)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch CPU threads (default: torch's, one per core, at most the container's CPU quota; on a "
                        "machine other jobs keep busy, 1 avoids threads spinning while they wait for a core)")
    p.add_argument("--out", default="results", help="folder for results.json/.csv and the plots; its progress/ "
                   "keeps every finished batch, so rerunning the same command after a kill resumes")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the progress of a different sweep in --out/progress, or replace a results.json "
                        "there has no progress of (a merge-results output), instead of refusing")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_rank_arguments(p)
    p.set_defaults(func=run, kept_on_interrupt="every finished batch")


def _pilots_help() -> str:
    from wavefront.sim.pilots import PILOTS_HELP

    return PILOTS_HELP


def add_prior_arguments(p) -> None:
    """Adds ``--prior-snr-db``, ``--prior-delay-spread-ns`` and ``--prior-doppler-hz`` (read by
    :func:`~wavefront.sim.experiment.parse_prior_ranges`) to a command's parser."""
    p.add_argument("--prior-snr-db", metavar="LOW:HIGH", help="SNR range a receiver may assume (default 0:25, "
                   "widened to the points)")
    p.add_argument("--prior-delay-spread-ns", metavar="LOW:HIGH", help="delay-spread range a receiver may assume (default 25:300)")
    p.add_argument("--prior-doppler-hz", metavar="LOW:HIGH", help="Doppler range a receiver may assume (default 50:1000); "
                   "beyond about 950 Hz the Doppler of 12x2 pilots turns ambiguous")


def _rho_arg(text: str):
    """Returns ``--rx-correlation`` as a float or a ``[low, high]`` list (the config validates the values)."""
    try:
        parts = [float(v) for v in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        # argparse turns a ValueError from a type into "invalid _rho_arg value"; this one it says as the others:
        # "rx_correlation=abc: must be ..." (wavefront.cli)
        raise argparse.ArgumentTypeError(f"must be a number or a LOW:HIGH range in [0, 1), got {text}")
    return parts[0] if len(parts) == 1 else parts


def add_mimo_arguments(p) -> None:
    """Adds ``--rx-antennas``, ``--users``, ``--rx-correlation``, ``--mimo-pilots``, ``--spatial`` and ``--antenna-spacing``
    (read by :func:`mimo_overrides`) to a command's parser."""
    p.add_argument("--rx-antennas", type=positive_int, default=None,
                   help="receive antennas R of the base station (uplink MIMO; default 1)")
    p.add_argument("--users", type=positive_int, default=None,
                   help="single-antenna users U, pilots orthogonal (Kronecker pattern; default 1)")
    p.add_argument("--rx-correlation", type=_rho_arg, default=None, metavar="RHO",
                   help="exponential receive correlation rho^|i-j| across a uniform linear array, in [0, 1) (default 0); "
                        "LOW:HIGH draws each frame's rho uniformly there (a prior for lmmse-estimated and mmse-bayes)")
    p.add_argument("--mimo-pilots", default=None,
                   choices=["kronecker", "dmrs-type1", "dmrs-type2", "dmrs-type1-double", "dmrs-type2-double"],
                   help="the users' pilots: Sionna's Kronecker pattern (default) or NR DM-RS ports with orthogonal "
                        "cover codes on the pilot symbols (type 1/2, single or double symbol)")
    p.add_argument("--spatial", default=None, choices=["kronecker", "rays"],
                   help="spatial model: kronecker (default; independent pairs mixed by rho^|i-j|) or rays (a CDL "
                        "profile's rays at their angles on the base station's ULA; needs --rx-correlation 0)")
    p.add_argument("--antenna-spacing", type=positive_float, default=None, metavar="WAVELENGTHS",
                   help="ULA element spacing in wavelengths for --spatial rays (default 0.5)")


def add_impairment_arguments(p) -> None:
    """Adds ``--cfo-hz``, ``--phase-noise-hz`` and ``--timing-offset`` (read by :func:`impairment_overrides`)."""
    for flag, field, text in (
            ("--cfo-hz", "cfo_hz", "residual carrier frequency offset in Hz"),
            ("--phase-noise-hz", "phase_noise_linewidth_hz", "3 dB linewidth in Hz of Wiener phase noise (>= 0)"),
            ("--timing-offset", "timing_offset_samples", "FFT window timing offset in samples, fractional, positive = "
                                                         "early (a phase ramp within the CP), negative = late (ISI)")):
        p.add_argument(flag, default=None, metavar="V|LOW:HIGH",
                       help=f"{text}: a value or a range drawn per frame (channel.{field}; write a negative range as "
                            f"{flag}=-3:3). Off by default; any impairment takes the time-domain path")


def impairment_overrides(args) -> dict:
    """Returns the ``channel`` impairment fields the command line sets (empty when none); bad text raises ConfigError."""
    out = {}
    for attr, field in (("cfo_hz", "cfo_hz"), ("phase_noise_hz", "phase_noise_linewidth_hz"),
                        ("timing_offset", "timing_offset_samples")):
        text = getattr(args, attr, None)
        if text is None:
            continue
        try:
            parts = [float(v) for v in str(text).split(":")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ConfigError(f"--{attr.replace('_', '-')}", text, "must be a number or a LOW:HIGH range")
        out[field] = parts[0] if len(parts) == 1 else parts
    return out


def with_impairments(config, args):
    """Returns ``config`` with the impairments the command line sets (``config`` itself when it sets none).

    What ``generate``, ``train`` and ``evaluate`` apply after their config; a bad value or combination
    (negative linewidth, a timing offset beyond the symbol, profile sparse) raises ConfigError naming the field.
    """
    overrides = impairment_overrides(args)
    return config.updated(channel=overrides) if overrides else config


def mimo_overrides(args) -> dict | None:
    """Returns the ``mimo`` fields the command line sets (None when it sets none)."""
    out = {k: v for k, v in (("num_rx_antennas", getattr(args, "rx_antennas", None)),
                             ("num_users", getattr(args, "users", None)),
                             ("rx_correlation", getattr(args, "rx_correlation", None)),
                             ("pilots", getattr(args, "mimo_pilots", None)),
                             ("spatial", getattr(args, "spatial", None)),
                             ("antenna_spacing_wavelengths", getattr(args, "antenna_spacing", None))) if v is not None}
    return out or None


def refuse_idle_rx_correlation(args, config) -> None:
    """Raises ConfigError when ``--rx-correlation`` (not 0) meets a ``config`` with one receive antenna, where it does nothing.

    Without ``--rx-antennas`` (or a config that sets several) the link is SISO and ``mimo.rx_correlation``
    is dropped from the results, so a forgotten ``--rx-antennas`` would give single-antenna numbers silently.
    """
    rho = getattr(args, "rx_correlation", None)
    values = rho if isinstance(rho, (list, tuple)) else [rho]
    if rho is not None and any(v != 0 for v in values) and config.mimo.num_rx_antennas == 1:
        raise ConfigError("rx_correlation", rho, "correlates the base station's antennas, and this config has one: "
                                                   "give --rx-antennas R (R > 1) too")
    # The same for the array of --spatial rays: with one antenna and one user the SISO path runs and reads neither
    # (a SISO config keeps them for the per-user configs a MIMO one derives, so the config itself cannot refuse).
    if not config.mimo.is_mimo:
        spacing, spatial = getattr(args, "antenna_spacing", None), getattr(args, "spatial", None)
        if spacing is not None:
            raise ConfigError("antenna_spacing", spacing, "spaces the base station's antennas for --spatial rays, and "
                                                          "this config has one antenna and one user: give "
                                                          "--rx-antennas R (R > 1) and --spatial rays too")
        if spatial == "rays":
            raise ConfigError("spatial", spatial, "places a CDL profile's rays on the base station's antennas, and "
                                                  "this config has one antenna and one user: give --rx-antennas R "
                                                  "(R > 1) too")


def add_rank_arguments(p) -> None:
    """Adds ``--rank`` and ``--world`` (array jobs that write partial results) to a command's parser."""
    p.add_argument("--rank", type=any_int, default=None,
                   help="array job index 0..world-1 (without torchrun): compute batches i with i %% world == rank and "
                        "write partial-RANK-of-WORLD.json into --out for `wavefront merge-results`")
    p.add_argument("--world", type=any_int, default=None, help="number of array jobs (with --rank)")


def _yaml_channel_fields(path) -> set[str]:
    """Returns the ``channel:`` fields a YAML config sets itself (not the defaults it leaves to SystemConfig)."""
    import yaml

    from wavefront.utils import read_text_file

    d = yaml.safe_load(read_text_file("config", path, "file not found", "is a folder; give a YAML file")) or {}
    channel = d.get("channel") if isinstance(d, dict) else None
    return set(channel) if isinstance(channel, dict) else set()


def build_spec(args):
    """Returns the validated SweepSpec for parsed arguments (raises ConfigError on bad input)."""
    from wavefront.sim.config import PRESETS, SystemConfig, preset
    from wavefront.sim.experiment import parse_prior_ranges
    from wavefront.sim.sweep import SweepSpec

    if args.config and args.preset:
        raise ConfigError("config", args.config, "give --config or --preset, not both")
    base = SystemConfig.from_yaml(args.config) if args.config else preset(args.preset or "default")
    # a preset that names its channel (mimo-chest) gives the defaults, and so does a --config that sets them (a
    # range there is drawn per frame; its SNR when another axis is swept); otherwise 1000 Hz and 300 ns, as always
    named = {} if args.config else PRESETS.get(args.preset or "default", {}).get("channel", {})
    dop_text = args.doppler_hz or f"{named.get('doppler_hz', 1000):g}"
    ds_text = args.delay_spread_ns or f"{named.get('delay_spread_s', 300e-9) * 1e9:g}"
    snr_given = args.snr_db is not None
    snr = parse_values("snr_db", args.snr_db if snr_given else SNR_DEFAULT)
    dop = parse_values("doppler_hz", dop_text)
    ds = [v * 1e-9 for v in parse_values("delay_spread_ns", ds_text)]
    in_yaml = _yaml_channel_fields(args.config) if args.config else set()
    if args.doppler_hz is None and "doppler_hz" in in_yaml:
        dop = [base.channel.doppler_hz]
    if args.delay_spread_ns is None and "delay_spread_s" in in_yaml:
        ds = [base.channel.delay_spread_s]
    if not snr_given and "snr_db" in in_yaml and (len(dop) > 1 or len(ds) > 1):
        snr = [base.channel.snr_db]  # another axis is swept: the config's SNR (or its range, per frame) is held
    axes = {k: v for k, v in (("snr_db", snr), ("doppler_hz", dop), ("delay_spread_s", ds)) if len(v) > 1}
    if len(axes) > 1:
        # --doppler-hz 100:1000:100 alone meets the default SNR range: say so, not only "give a single value"
        hint = (f" (--snr-db defaults to {SNR_DEFAULT}: give one SNR, e.g. --snr-db 20, to sweep "
                f"{[a for a in axes if a != 'snr_db'][0]})" if "snr_db" in axes and not snr_given else "")
        raise ConfigError("axes", ",".join(axes), "sweep one axis at a time: give a single value for the others" + hint)
    axis = next(iter(axes), "snr_db")
    channel = {k: list(v[0]) if isinstance(v[0], tuple) else v[0]
               for k, v in (("snr_db", snr), ("doppler_hz", dop), ("delay_spread_s", ds))}
    channel.pop(axis)
    if args.profile is not None:
        channel["profile"] = args.profile
    if args.ici:
        channel["ici"] = True
    if args.sparse_paths is not None:
        channel["sparse_num_paths"] = args.sparse_paths
    channel.update(impairment_overrides(args))
    config = base.updated(ofdm={"modulation": args.modulation} if args.modulation else None, channel=channel,
                          mimo=mimo_overrides(args))
    # the config refuses a path count other than its default on another profile; a typed default (4) it cannot tell
    if args.sparse_paths is not None and config.channel.profile != "sparse":
        raise ConfigError("channel.sparse_num_paths", args.sparse_paths,
                          f"applies to profile sparse only (this config's is {config.channel.profile}): "
                          "add --profile sparse, or leave --sparse-paths out")
    refuse_idle_rx_correlation(args, config)
    if getattr(args, "pilots", None) is not None:
        from wavefront.sim.pilots import apply_pilots

        config = apply_pilots(config, args.pilots)
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    if "lmmse-robust" not in names:  # a robust option that would be recorded and shape nothing
        for flag, default in ROBUST_DEFAULTS.items():
            if (value := getattr(args, flag)) != default:
                raise ConfigError(flag, value, "shapes lmmse-robust, which is not among --estimators: add it, or "
                                               "leave the option out")
    return SweepSpec(config=config, axis=axis, values={"snr_db": snr, "doppler_hz": dop, "delay_spread_s": ds}[axis],
                     estimators=names, frames=args.frames, batch_size=args.batch_size, seed=args.seed,
                     min_bit_errors=args.min_bit_errors, min_frames=args.min_frames, equalizer=args.equalizer,
                     device=args.device,
                     ldpc_rate=args.ldpc_rate, conditions=args.conditions, error_variance=args.error_variance,
                     prior_ranges=parse_prior_ranges(args.prior_snr_db, args.prior_delay_spread_ns, args.prior_doppler_hz),
                     robust_options={"pdp": args.robust_pdp, "doppler_spectrum": args.robust_doppler_spectrum,
                                     "covariance": args.robust_covariance})


def run(args) -> int:
    from wavefront.resolve import learned_available, resolve_estimators
    from wavefront.sim.experiment import write_partial
    from wavefront.sim.sweep import run_sweep, run_sweep_partial
    from wavefront.utils import job_ranks, process_group

    rank, world, array_job = job_ranks(args.rank, args.world)
    spec = build_spec(args)  # --threads: set by wavefront's main, as for every command
    # Before the sweep, with a real probe file: a bad --out must not cost its results.
    out = check_output_folder("out", args.out, sweep_output_bytes(spec))
    if not array_job:  # an array job writes a partial file, never results.json
        from wavefront.utils import refuse_results_without_progress

        refuse_results_without_progress(out, out / PROGRESS_DIR, args.overwrite)
    if args.estimators == DEFAULT_ESTIMATORS:
        why = None if learned_available() else "no learned estimator is installed"
        if why is None:  # the shipped model serves one grid and pilot pattern: another system sweeps without it
            try:
                resolve_estimators([DEFAULT_LEARNED], spec.prior)
            except ConfigError as exc:
                if exc.field != "checkpoint":
                    raise
                why = f"the shipped {DEFAULT_LEARNED} does not fit this system ({short_lists(exc.rule.split(';')[0])})"
        if why is not None:  # the shipped learned model joins the default sweep when installed and it fits
            if rank == 0:
                warnings.warn(f"{why}; sweeping the classical ones (train one for this system with wavefront train, "
                              "then pass it in --estimators)")
            spec.estimators = [n for n in spec.estimators if n != DEFAULT_LEARNED]
    if array_job:
        estimators = resolve_estimators(spec.estimators, spec.prior, device=args.device, robust_options=spec.robust_options)
        part = run_sweep_partial(spec, estimators, progress=not args.no_progress, rank=rank, world=world,
                                 progress_folder=out / PROGRESS_DIR, overwrite=args.overwrite)
        path = kept_progress(lambda: write_partial(part, out), out)
        print(f"rank {rank} of {world}: {part['seconds']:.1f} s; wrote {path} (combine with `wavefront merge-results`)",
              file=sys.stderr)
        return 0
    with process_group(args.device) as (rank, world, device):
        spec.device = device
        estimators = resolve_estimators(spec.estimators, spec.prior, device=device, robust_options=spec.robust_options)
        result = run_sweep(spec, estimators, progress=not args.no_progress, rank=rank, world=world,
                           progress_folder=out / PROGRESS_DIR, overwrite=args.overwrite)
    if rank == 0:
        kept_progress(lambda: report_sweep(result, out, replace=True), out)
    return 0


PROGRESS_DIR = "progress"


def short_lists(text: str, longest: int = 6) -> str:
    """Returns ``text`` with each bracketed list of more than ``longest`` numbers shortened to one readable phrase.

    An evenly spaced list by its ends and step, ``[0, 3, ..., 117] (40 values)``; any other by its first
    ``longest - 2`` entries, ``[0, 1, 5, 7, ...] (40 values)``. So a message naming 40 pilot subcarriers stays one line.
    """
    import re

    def shorten(m):
        items = [v.strip() for v in m.group(1).split(",")]
        if len(items) <= longest:
            return m.group(0)
        nums = [float(v) for v in items]
        steps = {round(b - a, 9) for a, b in zip(nums, nums[1:])}
        head = items[:2] if len(steps) == 1 else items[:longest - 2]
        tail = f", {items[-1]}" if len(steps) == 1 else ""
        return f"[{', '.join(head)}, ...{tail}] ({len(items)} values)"

    number = r"\s*-?\d+(?:\.\d+)?(?:e-?\d+)?\s*"
    return re.sub(rf"\[({number}(?:,{number})*)\]", shorten, text)


def kept_progress(save, out):
    """Returns ``save()``; a SaveError gains the hint that the progress in ``out`` is kept (one line, exit 2)."""
    from wavefront.utils import SaveError

    try:
        return save()
    except SaveError as exc:
        raise SaveError(exc.path, exc.exc, f"the computed batches are kept in {out / PROGRESS_DIR}: make room and "
                                           "rerun the same command to save without recomputing") from None


def sweep_output_bytes(spec) -> int:
    """Returns about the disk space [bytes] a sweep will fill in --out: a 4 kB block per batch record, results, plots."""
    batches = len(spec.values) * -(-spec.frames // spec.batch_size)
    rows = len(spec.values) * len(spec.estimators)
    return 4096 * (batches + 4) + 2048 * rows + 3 * 80_000


def report_sweep(result, out, replace: bool = False) -> None:
    """Prints the sweep's table and writes its results and plots into ``out``.

    ``replace``: False (``merge-results``) refuses an ``out/results.json`` of another sweep (another
    spec) with ConfigError before printing or writing anything; ``sweep`` itself passes True, its
    progress fingerprint having told it the run is the same."""
    import json

    from wavefront.sim.sweep import format_table, save_result

    if not replace:
        from wavefront.utils import refuse_other_results

        # compared as JSON text, as results.json holds it (a NaN equals itself there)
        spec = json.dumps(json.loads(json.dumps(result.spec, default=lambda v: None)), sort_keys=True)
        refuse_other_results(out, lambda held: json.dumps(held.get("spec"), sort_keys=True) == spec, "this sweep")
    print(format_table(result))
    paths = save_result(result, out)
    ranks = f" on {result.spec['world_size']} ranks" if result.spec.get("world_size", 1) > 1 else ""
    frames = sum(r.frames for r in result.rows) // max(1, len(result.spec["estimators"]))
    print(f"\n{frames} frames in {result.seconds:.1f} s{ranks}; wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
