"""RepNet (Wandt & Rosenhahn, CVPR 2019): weakly supervised lifting with a reprojection
network and a KCS critic. Re-implemented in torch from the paper.

* :class:`RepNetLifter` holds the pose generator G (2D -> 3D) and the camera branch
  (2D -> a 2x3 weak-perspective camera K). The generator sees only 2D; its 3D is trained by
  - the reprojection loss ``||W - K X||_F`` (W: the input 2D, X: the generated 3D),
  - the camera loss ``||2 / tr(K K^T) * K K^T - I_2||_F`` (K's rows orthogonal, equal norm),
  - the critic's Wasserstein score on X.
* :class:`KCSCritic` scores 3D poses; one path sees the pose, the other the KCS matrix
  ``Psi = B^T B`` (bone-vector dot products, B = X^T C with C = skeleton.incidence_matrix()).
* :func:`gradient_penalty` is WGAN-GP's term (Gulrajani et al. 2017), shared with the
  temporal model's discriminator.

The generated 3D is root-relative metres divided by ``scale_3d`` (one scalar, a buffer set
from the training data). The input 2D is root-centred screen coordinates divided either by one
global ``scale_2d`` (``per_sample_2d=False``) or by each pose's own RMS radius
(``per_sample_2d=True``, scaled to the typical projected radius of a normalised 3D pose). With
the global scale a near person's 2D is large and the generator copies that size into 3D (P1
tracks the distance; reports/benchmarks/lifting.md); with the per-sample scale the generator
cannot see the size, and the camera K takes it.

Shapes: forward (B, T, J, 2) screen coords -> (B, T, J, 3) root-relative metres in the frame
the generator learned (the camera frame when the camera branch stays close to [I | 0], which
its initialisation favours; P-MPJPE is frame-free).
"""

from __future__ import annotations

import torch
from torch import nn

from pose3d.geometry.shapes import check_shape
from pose3d.models.martinez import _insert_root
from pose3d.skeleton import NUM_JOINTS, ROOT, incidence_matrix


class _ResMLP(nn.Module):
    """Linear(in -> H), ``num_blocks`` residual blocks of two Linear+LeakyReLU, Linear(H -> out)."""

    def __init__(self, d_in: int, d_out: int, hidden: int, num_blocks: int):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                          nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
            for _ in range(num_blocks))
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


class RepNetLifter(nn.Module):
    """Pose generator + camera branch. ``generate`` works in the normalised space."""

    def __init__(self, num_joints: int = NUM_JOINTS, hidden: int = 1000, num_blocks: int = 2,
                 camera_hidden: int = 1000, per_sample_2d: bool = False):
        super().__init__()
        self.num_joints = num_joints
        self.per_sample_2d = per_sample_2d
        self.generator = _ResMLP(num_joints * 2, (num_joints - 1) * 3, hidden, num_blocks)
        self.camera = _ResMLP(num_joints * 2, 6, camera_hidden, 1)
        # start the camera near K = [I | 0] so that the generator's frame is the camera's
        with torch.no_grad():
            self.camera.out.weight.mul_(0.01)
            self.camera.out.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
        self.register_buffer("scale_2d", torch.ones(()))
        self.register_buffer("scale_3d", torch.ones(()))
        if per_sample_2d:  # the RMS radius each pose's 2D is scaled to (see set_normalization)
            self.register_buffer("sample_rms_2d", torch.ones(()))

    @torch.no_grad()
    def set_normalization(self, x2d: torch.Tensor, y3d: torch.Tensor) -> None:
        """Global scales: RMS of root-centred 2D (N, J, 2) and of root-relative camera-frame 3D
        (N, J, 3). Per sample, each pose's 2D is scaled to the RMS radius that the (x, y) of a
        normalised 3D pose has: then K = [I | 0] reprojects a pose of the true size, and the
        generator's scale is the 3D data's, not the 2D's."""
        self.scale_2d.copy_(center_2d(x2d).float().pow(2).mean().sqrt())
        self.scale_3d.copy_(y3d.float().pow(2).mean().sqrt())
        if self.per_sample_2d:
            xy = center_2d(y3d[..., :2].float()) / self.scale_3d
            self.sample_rms_2d.copy_(xy.pow(2).mean((-1, -2)).sqrt().mean())

    def normalize_2d(self, x2d: torch.Tensor) -> torch.Tensor:
        """(N, J, 2) screen -> (N, J, 2) root-centred / scale_2d (global) or / the pose's own
        RMS radius (per sample)."""
        c = center_2d(x2d)
        if self.per_sample_2d:
            return c * (self.sample_rms_2d / c.pow(2).mean((-1, -2), keepdim=True).sqrt().clamp_min(1e-8))
        return c / self.scale_2d

    def generate(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w (N, J, 2) normalised 2D -> (X (N, J, 3) normalised 3D, K (N, 2, 3))."""
        flat = w.reshape(len(w), -1)
        X = _insert_root(self.generator(flat).reshape(len(w), self.num_joints - 1, 3))
        K = self.camera(flat).reshape(len(w), 2, 3)
        return X, K

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, J, 2) screen coords -> (B, T, J, 3) root-relative metres."""
        check_shape(x, f"B T {self.num_joints} 2", "RepNetLifter input")
        B, T = x.shape[:2]
        X, _ = self.generate(self.normalize_2d(x.reshape(B * T, self.num_joints, 2)))
        return (X * self.scale_3d).reshape(B, T, self.num_joints, 3)


def center_2d(x2d: torch.Tensor) -> torch.Tensor:
    """Subtract the root joint: (..., J, 2) -> (..., J, 2)."""
    return x2d - x2d[..., ROOT:ROOT + 1, :]


def reprojection_loss(w: torch.Tensor, X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||W - K X||_F``; w (N, J, 2), X (N, J, 3), K (N, 2, 3)."""
    proj = X @ K.transpose(-1, -2)  # (N, J, 2) = (K X^T)^T
    return (w - proj).pow(2).sum((-1, -2)).clamp_min(1e-12).sqrt().mean()


def camera_loss(K: torch.Tensor) -> torch.Tensor:
    """Mean of ``||2 / tr(K K^T) K K^T - I||_F`` (RepNet eq. 4); K (N, 2, 3)."""
    KKt = K @ K.transpose(-1, -2)
    tr = KKt.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-8)
    eye = torch.eye(2, dtype=K.dtype, device=K.device)
    return (2 / tr[:, None, None] * KKt - eye).pow(2).sum((-1, -2)).clamp_min(1e-12).sqrt().mean()


class KCSLayer(nn.Module):
    """Kinematic Chain Space (Wandt et al. 2018): X (N, J, 3) -> Psi = B^T B (N, nb, nb), with
    the bone matrix B = X^T C (3, nb) and C the skeleton's incidence matrix (J, nb)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("C", torch.from_numpy(incidence_matrix()))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        bones = self.C.t().to(X.dtype) @ X  # (N, nb, 3): row b = bone b's vector
        return bones @ bones.transpose(-1, -2)  # (N, nb, nb)


class KCSCritic(nn.Module):
    """WGAN critic on 3D poses (N, J, 3) (normalised units) -> (N,) scores; pose and KCS paths."""

    def __init__(self, num_joints: int = NUM_JOINTS, hidden: int = 100, kcs_hidden: int = 1000):
        super().__init__()
        nb = num_joints - 1
        self.kcs = KCSLayer()
        self.pose_path = _ResMLP(num_joints * 3, hidden, hidden, 1)
        self.kcs_path = _ResMLP(nb * nb, hidden, kcs_hidden, 1)
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(2 * hidden, hidden),
                                  nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        check_shape(X, "N J 3", "KCSCritic input")
        a = self.pose_path(X.reshape(len(X), -1))
        b = self.kcs_path(self.kcs(X).reshape(len(X), -1))
        return self.head(torch.cat([a, b], dim=-1)).squeeze(-1)


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float,
                gp_every: int = 1, step: int = 0, draw=None) -> torch.Tensor:
    """WGAN-GP critic loss ``E[D(fake)] - E[D(real)] + gp_weight * GP``. With ``gp_every = k > 1``
    (lazy regularisation, Karras et al. 2020) the penalty is computed only on steps with
    ``step % k == 0`` and weighted ``k * gp_weight`` there, so its mean weight is unchanged.
    ``draw``: see :func:`gradient_penalty`."""
    loss = critic(fake).mean() - critic(real).mean()
    if step % gp_every == 0:
        loss = loss + gp_weight * gp_every * gradient_penalty(critic, real, fake, draw)
    return loss


def _uniform_rows(n: int, *shape: int, dtype=None, device=None) -> torch.Tensor:
    return torch.rand((n, *shape), dtype=dtype, device=device)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, draw=None) -> torch.Tensor:
    """WGAN-GP: E[(||grad critic(x_hat)|| - 1)^2] on random interpolates of real and fake
    (same shape, any layout the critic accepts). ``draw(n, *shape, dtype=, device=)`` gives the
    n rows' uniform numbers (default ``torch.rand``; data-parallel training passes
    :func:`pose3d.runtime.distributed.rand_rows`, each rank's share of the global batch's draw)."""
    eps = (draw or _uniform_rows)(len(real), *(1,) * (real.dim() - 1), dtype=real.dtype, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    score = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return (grad.reshape(len(grad), -1).norm(dim=1) - 1).pow(2).mean()
