"""Per-model training setups for the one training loop (:class:`pose3d.runtime.train.Trainer`), and
the registry of lifters.

Each ``setup_<model>(p, train, seed)`` returns a :class:`Setup`: the modules, optimisers and
schedulers for the Trainer, ``train_batches(epoch)`` and ``step_fn``. :data:`LIFTERS` maps a
lifter's name (its params section and ``lift --model``) to its model class and setup; a new
lifter is a model, a setup and one :func:`register_lifter` line (plus its params section).
Batches are built lazily by :func:`pose3d.tasks.lifting.data.make_batch` with the section's
augmentation; shuffles use ``numpy.random.default_rng([seed, epoch])``.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from pose3d.data.io import DataError
from pose3d.geometry.camera import project_camera
from pose3d.models.martinez import MartinezLifter
from pose3d.models.repnet import KCSCritic, RepNetLifter, camera_loss, critic_loss, reprojection_loss
from pose3d.models.temporal import TemporalDiscriminator, TemporalLifter
from pose3d.runtime import distributed
from pose3d.skeleton import JOINT_INDEX, bone_lengths
from pose3d.tasks.lifting.data import (Augment, FrameSet, flip_pixels, make_batch, to_screen,
                                       window_indices)
from pose3d.runtime.train import LazyBatches, adam


@dataclass(frozen=True)
class LifterSpec:
    """A registered lifter: ``model(**model_kwargs)`` rebuilds it (:func:`load_lifter`),
    ``setup(p, train, seed)`` trains it; ``with_root``: it also predicts the root trajectory
    (``forward_root``), written as the predictions' ``root_3d`` column."""

    model: type
    setup: Callable[..., "Setup"]
    with_root: bool = False


LIFTERS: dict[str, LifterSpec] = {}


def register_lifter(name: str, model: type, setup: Callable[..., "Setup"], with_root: bool = False) -> None:
    LIFTERS[name] = LifterSpec(model, setup, with_root)


@dataclass
class Setup:
    lifter: torch.nn.Module
    modules: dict
    optimizers: dict
    schedulers: dict
    train_batches: Callable[[int], Any]
    step_fn: Callable
    model_kwargs: dict


def augment_of(p) -> Augment:
    return Augment(virtual_cameras=p.virtual_cameras, max_deg=p.virtual_max_deg, flip=p.flip_aug,
                   resample_noise_px=p.noise_px if p.input_2d == "gt" else 0.0)


def _chunks(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    n = max(len(rows) // batch_size, 1)  # drop the ragged last batch (BatchNorm needs >1)
    return [rows[i * batch_size:(i + 1) * batch_size] for i in range(n)]


def _stats_sample(fs: FrameSet, rows: np.ndarray, aug: Augment, seed: int) -> dict:
    """One augmented pass over (at most 50k of) ``rows``: the distribution normalisation sees."""
    rng = np.random.default_rng([seed, 99])
    rows = rng.choice(rows, min(len(rows), 50_000), replace=False)
    return make_batch(fs, rows[:, None], aug, rng)


def _exp(opt, gamma):
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)


# --------------------------------------------------------------------------- martinez
def setup_martinez(p, train: FrameSet, seed: int) -> Setup:
    torch.manual_seed(seed)  # reproducible initial weights
    kw = dict(hidden=p.hidden, num_blocks=p.num_blocks, dropout=p.dropout, max_norm=p.max_norm)
    model = MartinezLifter(**kw)
    aug = augment_of(p)
    rows = np.arange(0, train.num_frames, p.train_stride)
    s = _stats_sample(train, rows, aug, seed)
    model.set_normalization(s["x2d"][:, 0], s["pose"][:, 0])
    opt = adam(model.parameters(), lr=p.lr)

    def batches(epoch):
        rng = np.random.default_rng([seed, epoch])
        chunks = _chunks(rng.permutation(rows), p.batch_size)
        return LazyBatches(len(chunks), lambda i: make_batch(train, chunks[i][:, None], aug, rng))

    def step(ctx, b, epoch):
        m = ctx.modules["gen"]
        with ctx.autocast():
            z = m.forward_normalized(b["x2d"][:, 0])
        loss = (z.float() - m.normalize_target(b["pose"][:, 0])).pow(2).mean()
        ctx.backward_step(loss, "gen")
        m.apply_max_norm()
        with torch.no_grad():
            err = (m.denormalize(z.detach().float()) - b["pose"][:, 0]).norm(dim=-1).mean()
        return {"loss": loss, "mpjpe_mm": err * 1000}

    return Setup(model, {"gen": model}, {"gen": opt}, {"gen": _exp(opt, p.lr_decay)}, batches,
                 step, kw)


# --------------------------------------------------------------------------- repnet
def unpaired_pools(fs: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """Split the sequences into a generator pool (2D only) and a critic pool (3D only), by
    subject (alternating in sorted order) or, with one subject, by action. Returns the frame
    rows of each; no (subject, action) is in both, so no 2D input's own 3D pose - in any
    camera - ever reaches the critic."""
    subjects = sorted(set(fs.subject))
    if len(subjects) >= 2:
        critic_keys = set(subjects[1::2])
        in_critic = np.array([s in critic_keys for s in fs.subject])
    else:
        actions = sorted(set(fs.action))
        if len(actions) < 2:
            raise ValueError("repnet needs >= 2 subjects or >= 2 actions to keep 2D and 3D unpaired")
        critic_keys = set(actions[1::2])
        in_critic = np.array([a in critic_keys for a in fs.action])
    seq_rows = lambda mask: np.concatenate(  # noqa: E731
        [np.arange(fs.starts[s], fs.starts[s] + fs.lengths[s]) for s in np.flatnonzero(mask)])
    return seq_rows(~in_critic), seq_rows(in_critic)


def repnet_batches(fs: FrameSet, gen_rows, critic_rows, batch_size: int, aug: Augment,
                   rng: np.random.Generator) -> LazyBatches:
    """Batches of {x2d: generator 2D (B,1,J,2), real: critic 3D (B,1,J,3), gen_rows, critic_rows};
    the generator's own 3D is not in the batch at all."""
    chunks = _chunks(rng.permutation(gen_rows), batch_size)
    crit = np.resize(rng.permutation(critic_rows), len(chunks) * batch_size).reshape(len(chunks), -1)

    def make(i):
        g, c = chunks[i], crit[i][:len(chunks[i])]
        return {"x2d": make_batch(fs, g[:, None], aug, rng)["x2d"],
                "real": make_batch(fs, c[:, None], aug, rng)["pose"],
                "gen_rows": g, "critic_rows": c, "index": i}

    return LazyBatches(len(chunks), make)


def setup_repnet(p, train: FrameSet, seed: int) -> Setup:
    torch.manual_seed(seed)  # reproducible initial weights
    kw = dict(hidden=p.hidden, num_blocks=p.num_blocks, camera_hidden=p.hidden,
              per_sample_2d=p.norm_2d == "sample")
    model = RepNetLifter(**kw)
    critic = KCSCritic(hidden=p.critic_hidden, kcs_hidden=p.critic_kcs_hidden)
    aug = augment_of(p)
    gen_rows, critic_rows = unpaired_pools(train)
    gen_rows, critic_rows = gen_rows[::p.train_stride], critic_rows[::p.train_stride]
    # global scales: 2D from the generator pool, 3D from the critic pool (never paired)
    s2 = _stats_sample(train, gen_rows, aug, seed)["x2d"][:, 0]
    s3 = _stats_sample(train, critic_rows, aug, seed + 1)["pose"][:, 0]
    model.set_normalization(s2, s3)
    og = adam(model.parameters(), lr=p.lr, betas=(0.5, 0.9))
    oc = adam(critic.parameters(), lr=p.critic_lr, betas=(0.5, 0.9))

    def batches(epoch):
        return repnet_batches(train, gen_rows, critic_rows, p.batch_size, aug,
                              np.random.default_rng([seed, epoch]))

    def step(ctx, b, epoch):
        G, D = ctx.modules["gen"], ctx.modules["critic"]
        w = G.normalize_2d(b["x2d"][:, 0])
        real = b["real"][:, 0] / G.scale_3d
        # G has no dropout and does not change during the critic steps: one forward serves both
        # the critic's fakes (detached) and the generator's update below
        with ctx.autocast():  # bf16 matmuls where the device has them; the losses in float32
            X, K = G.generate(w)
        X, K = X.float(), K.float()
        fake = X.detach()
        for k in range(p.critic_steps):
            # the critic step is counted from the batch index: a resumed run makes the same
            # lazy-penalty choices
            with ctx.autocast():
                loss_d = critic_loss(D, real, fake, p.gp_weight, p.gp_every,
                                     b["index"] * p.critic_steps + k, draw=distributed.rand_rows).float()
            ctx.backward_step(loss_d, "critic")
        with ctx.autocast():
            adv = -D(X).float().mean()
        rep, cam = reprojection_loss(w, X, K), camera_loss(K)
        wr = min(p.reproj_weight * p.reproj_growth ** epoch, max(p.reproj_max, p.reproj_weight))
        loss = p.adv_weight * adv + wr * rep + p.camera_weight * cam
        ctx.backward_step(loss, "gen")
        return {"loss": loss, "loss_critic": loss_d, "reproj": rep, "camera": cam, "adv": adv,
                "reproj_w": wr}

    return Setup(model, {"gen": model, "critic": critic}, {"gen": og, "critic": oc},
                 {"gen": _exp(og, p.lr_decay), "critic": _exp(oc, p.lr_decay)}, batches, step, kw)


# --------------------------------------------------------------------------- temporal
def temporal_context(receptive_field: int, causal: bool) -> tuple[int, int]:
    """Input frames (before, after) an output frame needs."""
    r = receptive_field - 1
    return (r, 0) if causal else (r // 2, r - r // 2)


def two_d_only(fs: FrameSet) -> FrameSet:
    """A copy of ``fs`` without its 3D (world and camera-frame joints set to NaN): what an
    unlabelled subject gives (its 2D and cameras). Any use of its 3D makes a loss NaN."""
    return dataclasses.replace(fs, pos_world=np.full_like(fs.pos_world, np.nan),
                               pos_cam=np.full_like(fs.pos_cam, np.nan))


def unlabeled_batch(fs: FrameSet, idx: np.ndarray, flip: bool, rng: np.random.Generator) -> dict:
    """2D-only windows ``idx`` (B, T) of an unlabelled FrameSet: ``x2d`` (B, T, J, 2) screen
    coords (model input), ``uv`` (B, T, J, 2) pixels, ``K`` (B, 3, 3), ``dist`` (B, 5), ``wh``
    (B, 2). With ``flip`` a random half is mirrored in 2D (:func:`flip_pixels`); no virtual
    cameras: rotating a subject needs its 3D, which an unlabelled subject does not have."""
    idx = np.asarray(idx)
    seq = fs.seq_of_frame[idx[:, 0]]
    K = torch.from_numpy(fs.K[seq]).double()
    wh = torch.from_numpy(fs.wh[seq]).double()
    uv = torch.from_numpy(fs.uv[idx]).double()
    if flip:
        f = torch.from_numpy(rng.random(len(idx)) < 0.5)
        uv = torch.where(f[:, None, None, None], flip_pixels(uv, K[:, None]), uv)
    return {"x2d": to_screen(uv, wh[:, None]).float(), "uv": uv.float(), "K": K.float(),
            "dist": torch.from_numpy(fs.dist[seq]).float(), "wh": wh.float(),
            "R": torch.from_numpy(fs.R[seq]).float(), "t": torch.from_numpy(fs.t[seq]).float()}


ANKLES = [JOINT_INDEX["l_ankle"], JOINT_INDEX["r_ankle"]]


def floor_height(fs: FrameSet) -> float:
    """Median over frames of the lower ankle's height along the world vertical ``fs.up``
    (metres): where the labelled subjects' feet meet the floor."""
    return float(np.median((fs.pos_world[:, ANKLES] @ fs.up).min(-1)))


def floor_contact_loss(pose: torch.Tensor, root: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                       up: torch.Tensor, floor: float) -> torch.Tensor:
    """Ground contact through the known extrinsics: root-relative ``pose`` (B, L, J, 3) at the
    predicted ``root`` (B, L, 3), camera frame, taken to the world (x_w = R^T (x_c - t), ``R``
    (B, 3, 3), ``t`` (B, 3)); mean |height of the lower ankle along ``up`` (3,) - ``floor``|
    (metres). It anchors the depth (hence the scale) that the 2D reprojection leaves free."""
    x_cam = pose + root[:, :, None, :]
    x_world = (x_cam - t[:, None, None, :]) @ R[:, None]           # row vectors: R^T (x - t)
    lowest = (x_world[..., ANKLES, :] @ up).amin(-1)                 # (B, L)
    return (lowest - floor).abs().mean()


def semi_reprojection_loss(pose: torch.Tensor, root: torch.Tensor, uv: torch.Tensor,
                           K: torch.Tensor, dist: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """2D reprojection loss of unlabelled frames: root-relative ``pose`` (B, L, J, 3) placed at
    the predicted ``root`` (B, L, 3) (camera frame, metres; depth clamped to >= 0.1 m), projected
    through the sequence's own camera ``K`` (B, 3, 3) and distortion ``dist`` (B, 5), against the
    input 2D ``uv`` (B, L, J, 2) pixels: mean per-joint distance in screen coordinates
    (:func:`pose3d.tasks.lifting.data.to_screen`, image width ``wh[:, 0]`` = 2 units)."""
    absolute = pose + root[:, :, None, :]
    absolute = torch.cat([absolute[..., :2], absolute[..., 2:].clamp_min(0.1)], dim=-1)
    K, dist, wh = K[:, None], dist[:, None], wh[:, None]
    proj = to_screen(project_camera(absolute, K, dist), wh)
    return (proj - to_screen(uv, wh)).norm(dim=-1).mean()


def bone_length_loss(pose: torch.Tensor, labeled_pose: torch.Tensor) -> torch.Tensor:
    """VideoPose3D's soft scale constraint: mean |mean bone length of the unlabelled
    predictions ``pose`` (..., J, 3) - mean bone length of the labelled batch's 3D
    ``labeled_pose`` (..., J, 3)| over the bones (metres)."""
    flat = lambda x: bone_lengths(x).reshape(-1, x.shape[-2] - 1).mean(0)  # noqa: E731
    return (flat(pose) - flat(labeled_pose)).abs().mean()


def unit_scale(seq: torch.Tensor) -> torch.Tensor:
    """Pose sequences (B, L, J, 3) divided by each sequence's mean bone length: what a
    scale-free critic sees (shape and motion, not the subject's size)."""
    return seq / bone_lengths(seq).mean((1, 2)).clamp_min(1e-6)[:, None, None, None]


@contextmanager
def running_stats_frozen(module: torch.nn.Module):
    """Inside: BatchNorm layers still normalise with the batch's own statistics (as in training)
    but leave their running statistics (what the test uses) as they were (momentum 0)."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def setup_temporal(p, train: FrameSet, seed: int) -> Setup:
    """The labelled subjects (``p.labeled_subjects``, default: every train subject not in
    ``p.unlabeled_subjects``) are supervised in 3D; the unlabelled ones give only their 2D."""
    subjects = set(train.subject)
    labeled = list(p.labeled_subjects) or [s for s in sorted(subjects) if s not in p.unlabeled_subjects]
    for s in list(labeled) + list(p.unlabeled_subjects):
        if s not in subjects:
            raise DataError(f"temporal: subject {s!r} is not a train subject ({sorted(subjects)})")
    lab = train.select([s in labeled for s in train.subject])
    unl = train.select([s in p.unlabeled_subjects for s in train.subject]) if p.unlabeled_subjects else None
    return setup_temporal_semi(p, lab, seed, unl)


def setup_temporal_semi(p, labeled: FrameSet, seed: int, unlabeled: FrameSet | None = None) -> Setup:
    torch.manual_seed(seed)  # reproducible initial weights
    kw = dict(filter_widths=tuple(p.filter_widths), causal=p.causal, dropout=p.dropout,
              channels=p.channels, traj_channels=p.traj_channels)
    model = TemporalLifter(**kw)
    aug = augment_of(p)
    R = model.receptive_field
    before, after = temporal_context(R, p.causal)
    rows = np.arange(0, labeled.num_frames, p.train_stride)
    s = _stats_sample(labeled, rows, aug, seed)
    model.set_normalization(s["pose"][:, 0], s["root"][:, 0])
    semi = unlabeled is not None and len(unlabeled) > 0
    if semi:
        unlabeled = two_d_only(unlabeled)
    L = p.gan_frames
    opt = adam(model.parameters(), lr=p.lr, amsgrad=True)
    modules, opts = {"gen": model}, {"gen": opt}
    scheds = {"gen": _exp(opt, p.lr_decay)}
    gan = semi and p.adv_weight > 0
    if gan:
        disc = TemporalDiscriminator()
        oc = adam(disc.parameters(), lr=p.critic_lr, betas=(0.5, 0.9))
        modules["critic"], opts["critic"] = disc, oc
        scheds["critic"] = _exp(oc, p.lr_decay)
    if semi:
        urows = np.arange(0, unlabeled.num_frames, p.train_stride)
        floor = floor_height(labeled)
        up = torch.from_numpy(labeled.up).float()

    pairs = p.velocity_weight > 0
    anchors = max(p.batch_size // 2, 2) if pairs else p.batch_size

    def split_pairs(batch: dict, rank: int, world: int) -> dict:
        """A rank's slice of a batch whose x2d/pose/root stack frames t over frames t + 1:
        the same pairs from both halves, so that each rank's rows stay pairs."""
        paired = ("x2d", "pose", "root")
        out = distributed.shard_batch({k: v for k, v in batch.items() if k not in paired}, rank, world)
        for k in paired:
            a, b = batch[k].chunk(2)
            out[k] = torch.cat([distributed.shard_batch(a, rank, world), distributed.shard_batch(b, rank, world)])
        return out

    def batches(epoch):
        rng = np.random.default_rng([seed, epoch])
        chunks = _chunks(rng.permutation(rows), anchors)
        if semi:
            uch = np.resize(rng.permutation(urows), len(chunks) * anchors).reshape(len(chunks), -1)
            rch = np.resize(rng.permutation(rows), len(chunks) * anchors).reshape(len(chunks), -1)

        def make(i):
            # pairs: one window of R + 1 frames, augmented as a whole, gives the windows of
            # output frames t and t + 1 (edge-clamped at a sequence's end, as at test time)
            b = make_batch(labeled, window_indices(labeled, chunks[i], before, after + pairs), aug, rng,
                           centre=before)
            if pairs:
                out = {"x2d": torch.cat([b["x2d"][:, :R], b["x2d"][:, 1:]]),        # (2n, R, J, 2)
                       "pose": torch.cat([b["pose"][:, before], b["pose"][:, before + 1]]),
                       "root": torch.cat([b["root"][:, before], b["root"][:, before + 1]])}
            else:
                out = {"x2d": b["x2d"], "pose": b["pose"][:, before], "root": b["root"][:, before]}
            if semi and epoch >= p.semi_warmup_epochs:
                n = len(chunks[i])
                # unlabelled: L consecutive output frames need R + L - 1 input frames
                u = unlabeled_batch(unlabeled, window_indices(unlabeled, uch[i][:n], before, after + L - 1),
                                    p.flip_aug, rng)
                out.update(ux2d=u["x2d"], uuv=u["uv"][:, before:before + L], uK=u["K"],
                           udist=u["dist"], uwh=u["wh"], uR=u["R"], ut=u["t"])
                if gan:
                    r = make_batch(labeled, window_indices(labeled, rch[i][:n], 0, L - 1), aug, rng,
                                   centre=0)
                    out["real_seq"] = r["pose"]
            return out

        return LazyBatches(len(chunks), make, split=split_pairs if pairs else None)

    def step(ctx, b, epoch):
        m = ctx.modules["gen"]
        with ctx.autocast():
            pred = m(b["x2d"], pad=False, strided=True)[:, 0]          # (B, J, 3)
            root = m.forward_root(b["x2d"], pad=False, strided=True)[:, 0]  # (B, 3)
        pred, root = pred.float(), root.float()
        loss_pose = (pred - b["pose"]).norm(dim=-1).mean()
        # trajectory: MPJPE weighted by 1 / depth (far roots are less precise; VideoPose3D)
        loss_traj = ((root - b["root"]).norm(dim=-1) / b["root"][:, 2].abs().clamp_min(0.1)).mean()
        loss = loss_pose + p.traj_weight * loss_traj
        out = {"mpjpe_mm": loss_pose * 1000, "traj": loss_traj}
        if pairs:  # rows [0, n) are frames t, rows [n, 2n) frames t + 1
            n = len(pred) // 2
            vel = ((pred[n:] - pred[:n]) - (b["pose"][n:] - b["pose"][:n])).norm(dim=-1).mean()
            loss = loss + p.velocity_weight * vel
            out["mpjve_mm"] = vel * 1000
        if semi and epoch >= p.semi_warmup_epochs:
            # the unlabelled windows (2D flips only, L frames each) are not the test-time input
            # distribution: with unlabeled_bn_stats off they do not move BatchNorm's running stats
            frozen = nullcontext() if p.unlabeled_bn_stats else running_stats_frozen(m)
            with ctx.autocast(), frozen:
                upred = m(b["ux2d"], pad=False).float()                 # (B, L, J, 3)
                uroot = m.forward_root(b["ux2d"], pad=False).float()    # (B, L, 3)
            if not p.reproj_trains_traj:
                uroot = uroot.detach()
            reproj = semi_reprojection_loss(upred, uroot, b["uuv"], b["uK"], b["udist"], b["uwh"])
            bone = bone_length_loss(upred, b["pose"])
            loss = loss + p.reproj_weight * reproj + p.bone_weight * bone
            out.update(reproj=reproj, bone=bone)
            if p.floor_weight > 0:
                fpose = upred.detach() if p.floor_root_only else upred
                fl = floor_contact_loss(fpose, uroot, b["uR"], b["ut"], up.to(upred.device), floor)
                loss = loss + p.floor_weight * fl
                out["floor"] = fl
            if gan:
                D = ctx.modules["critic"]
                real, fake = b["real_seq"], upred
                if p.critic_scale_free:
                    real, fake = unit_scale(real), unit_scale(fake)
                loss_d = critic_loss(D, real, fake.detach(), p.gp_weight, draw=distributed.rand_rows)
                ctx.backward_step(loss_d, "critic")
                adv = -D(fake).mean()
                loss = loss + p.adv_weight * adv
                out.update(adv=adv, loss_critic=loss_d)
        ctx.backward_step(loss, "gen")
        out["loss"] = loss
        return out

    return Setup(model, modules, opts, scheds, batches, step, kw)


register_lifter("martinez", MartinezLifter, setup_martinez)
register_lifter("repnet", RepNetLifter, setup_repnet)
register_lifter("temporal", TemporalLifter, setup_temporal, with_root=True)
