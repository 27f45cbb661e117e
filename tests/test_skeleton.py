"""The H36M-17 skeleton: tree, left/right, flip, KCS, reorder by name, 32 -> 17."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose3d import skeleton as sk

F64 = torch.float64


def _pose(n=4, seed=0):
    return torch.randn(n, sk.NUM_JOINTS, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_published_order_parents_and_sides():
    # VideoPose3D's h36m_skeleton after removing the 15 unused joints (common/h36m_dataset.py)
    assert sk.PARENTS == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
    assert sorted(sk.LEFT_JOINTS) == [4, 5, 6, 11, 12, 13]
    assert sorted(sk.RIGHT_JOINTS) == [1, 2, 3, 14, 15, 16]
    assert sk.ROOT == 0 and sk.JOINT_NAMES[sk.ROOT] == "pelvis" and sk.NUM_JOINTS == 17


def test_parents_form_a_tree_rooted_at_pelvis():
    roots = [j for j, p in enumerate(sk.PARENTS) if p < 0]
    assert roots == [sk.JOINT_INDEX["pelvis"]]
    for j in range(sk.NUM_JOINTS):
        # topological order (parent before child) implies no cycles; walk up to the root
        assert j == sk.ROOT or 0 <= sk.PARENTS[j] < j
        seen, k = 0, j
        while k != sk.ROOT:
            k = sk.PARENTS[k]
            seen += 1
            assert seen < sk.NUM_JOINTS
    assert len(sk.BONES) == sk.NUM_JOINTS - 1 == len(sk.BONE_NAMES)
    assert sk.BONE_NAMES[sk.BONES.index((sk.JOINT_INDEX["l_elbow"], sk.JOINT_INDEX["l_wrist"]))] == "l_elbow-l_wrist"


def test_left_right_pairs_by_name():
    assert len(sk.LEFT_JOINTS) == len(sk.RIGHT_JOINTS) == 6
    for l, r in zip(sk.LEFT_JOINTS, sk.RIGHT_JOINTS):
        ln, rn = sk.JOINT_NAMES[l], sk.JOINT_NAMES[r]
        assert ln.startswith("l_") and rn.startswith("r_") and ln[2:] == rn[2:]
    assert {sk.bone_group(b) for b in sk.BONES} == {"left", "right", "torso"}
    assert sk.bone_group((sk.JOINT_INDEX["thorax"], sk.JOINT_INDEX["l_shoulder"])) == "left"


def test_flip_is_an_involution_and_swaps_sides():
    perm = np.array(sk.FLIP_PERM)
    assert np.array_equal(perm[perm], np.arange(sk.NUM_JOINTS))
    assert sk.FLIP_PERM[sk.JOINT_INDEX["l_wrist"]] == sk.JOINT_INDEX["r_wrist"]
    assert sk.FLIP_PERM[sk.JOINT_INDEX["spine"]] == sk.JOINT_INDEX["spine"]
    x = _pose()
    y = sk.flip_poses(x)
    assert torch.equal(sk.flip_poses(y), x)
    assert torch.equal(y[:, sk.JOINT_INDEX["r_knee"], 0], -x[:, sk.JOINT_INDEX["l_knee"], 0])
    assert torch.equal(y[:, sk.JOINT_INDEX["r_knee"], 1:], x[:, sk.JOINT_INDEX["l_knee"], 1:])
    xn = x.numpy()
    assert np.array_equal(sk.flip_poses(sk.flip_poses(xn, axis=1), axis=1), xn)
    # flipping preserves bone lengths (mirror symmetry of the bone set)
    assert torch.allclose(sk.bone_lengths(y).sort(-1).values, sk.bone_lengths(x).sort(-1).values)


def test_kcs_incidence_matrix():
    C = sk.incidence_matrix()
    assert C.shape == (sk.NUM_JOINTS, sk.NUM_JOINTS - 1)
    assert np.array_equal(C.sum(0), np.zeros(C.shape[1]))  # each bone: +1 child, -1 parent
    assert set(np.unique(C)) == {-1.0, 0.0, 1.0}
    x = _pose()
    bones = torch.tensor(C, dtype=F64).T @ x  # C^T X, (n, B, 3)
    assert torch.allclose(bones, sk.bone_vectors(x), atol=1e-15)
    # rank J - 1: a translation (the null space) does not change bones
    assert np.linalg.matrix_rank(C) == sk.NUM_JOINTS - 1
    assert torch.allclose(sk.bone_vectors(x + 3.0), sk.bone_vectors(x), atol=1e-14)


def test_h36m32_to_17_matches_videopose3d_indices():
    assert sk.h36m32_indices_of_17() == [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
    x32 = torch.randn(2, 32, 3, dtype=F64)
    assert torch.equal(sk.h36m32_to_17(x32), x32[:, [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]])


def test_coco17_round_trips():
    x = _pose(seed=1)
    coco = sk.to_coco17(x)
    assert coco.shape == (4, 17, 3)
    for n in ("l_eye", "r_eye", "l_ear", "r_ear"):
        assert torch.isnan(coco[:, sk.COCO17_NAMES.index(n)]).all()
    assert torch.equal(coco[:, sk.COCO17_NAMES.index("nose")], x[:, sk.JOINT_INDEX["neck_nose"]])
    back = sk.from_coco17(coco)
    shared = [sk.JOINT_INDEX[n] for n in ("l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
                                          "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle",
                                          "r_ankle", "neck_nose")]
    assert torch.equal(back[:, shared], x[:, shared])
    I = sk.JOINT_INDEX
    assert torch.allclose(back[:, I["pelvis"]], (x[:, I["l_hip"]] + x[:, I["r_hip"]]) / 2)
    assert torch.allclose(back[:, I["thorax"]], (x[:, I["l_shoulder"]] + x[:, I["r_shoulder"]]) / 2)
    assert torch.isnan(back[:, I["head_top"]]).all()
    # COCO -> H36M -> COCO returns every COCO joint that has a counterpart, unchanged
    c = torch.randn(3, 17, 2, dtype=F64)
    cc = sk.to_coco17(sk.from_coco17(c))
    body = [i for i, n in enumerate(sk.COCO17_NAMES) if "eye" not in n and "ear" not in n]
    assert torch.equal(cc[:, body], c[:, body])


def test_mpii16_round_trips():
    m = torch.randn(5, 16, 2, dtype=F64)
    assert torch.equal(sk.to_mpii16(sk.from_mpii16(m)), m)
    x = _pose(seed=2).numpy()
    back = sk.from_mpii16(sk.to_mpii16(x))
    keep = [j for j in range(17) if sk.JOINT_NAMES[j] != "spine"]
    assert np.array_equal(back[:, keep], x[:, keep])
    s, p, t = sk.JOINT_INDEX["spine"], sk.JOINT_INDEX["pelvis"], sk.JOINT_INDEX["thorax"]
    assert np.allclose(back[:, s], (x[:, p] + x[:, t]) / 2)


def test_hg3d_order_round_trips():
    x = _pose(seed=3)
    h = sk.to_hg3d_order(x)
    assert h.shape == (4, 16, 3)
    assert torch.equal(h, x[:, list(sk.HG3D_ORDER_H36M_INDICES)])
    back = sk.from_hg3d_order(h)
    nn = sk.JOINT_INDEX["neck_nose"]
    assert torch.isnan(back[:, nn]).all()
    keep = [j for j in range(17) if j != nn]
    assert torch.equal(back[:, keep], x[:, keep])
    assert torch.equal(sk.to_hg3d_order(back), h)


def test_reorder_by_name_generic():
    src = ("a", "b", "c")
    x = np.arange(6.0).reshape(3, 2)
    y = sk.reorder(x, src, ("c", "a", "z"))
    assert np.array_equal(y[:2], [[4.0, 5.0], [0.0, 1.0]]) and np.isnan(y[2]).all()
    assert sk.reorder_indices(src, ("c", "a", "z")) == [2, 0, -1]
    assert np.array_equal(sk.reorder(x, src, ("c", "a", "z"), fill=-1.0)[2], [-1.0, -1.0])
    with pytest.raises(ValueError, match="poses have 3 joints but 2 names"):
        sk.reorder(x, ("a", "b"), ("a",))
