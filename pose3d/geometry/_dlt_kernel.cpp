// Calibrated weighted DLT for many points in one pass per point: undistortion (3 Newton steps on
// OpenCV's radial-tangential model), the 10 moments of A^T A, the closed-form smallest
// eigenvector (inverse iteration by block elimination) and the mean reprojection error. The same
// steps as pose3d.geometry.triangulation._k_fused, written as one loop over points that the
// compiler vectorises (SoA inputs, views unrolled by template). Built at first use by
// pose3d.geometry.native (g++ -O3 -march=native); loaded with ctypes.
//
// u, v: V rows of stride ld >= N, distorted pixels (NaN = missing); sc: scores in the same layout
// or null; a view is used where u, v are finite and (without scores, or) score >= thr; its DLT
// row weight is the score (weighted, clamped at 0) or 1, written to w_out (V rows of stride ld; 0 =
// unused; a double array: a byte store there stops gcc from vectorising the loop)
// cp: V x 22 (fx, skew, cx, fy, cy, k1, k2, p1, p2, k3, R row-major, t); C: V x 4 x 10
// out: X0, X1, X2, rep (N), redo (N) = eigen-residual test failed or last Newton step > 1e-5
#include <cmath>
#include <cstdint>

constexpr int MAX_VIEWS = 64;

template <int VT, bool SC>
static void tri_t(int Vrt, int64_t N, int64_t ld, const double* __restrict u, const double* __restrict v,
                  const double* __restrict sc, double thr, int weighted, double* __restrict w_out,
                  const double* __restrict cp, const double* __restrict C,
                  double* __restrict X0, double* __restrict X1, double* __restrict X2,
                  double* __restrict rep, uint8_t* __restrict redo) {
  const int V = VT > 0 ? VT : Vrt;
  double ifx[VT > 0 ? VT : MAX_VIEWS], ify[VT > 0 ? VT : MAX_VIEWS];  // reciprocal focal lengths
  for (int i = 0; i < V; ++i) { ifx[i] = 1 / cp[22 * i]; ify[i] = 1 / cp[22 * i + 3]; }
#pragma omp simd
  for (int64_t j = 0; j < N; ++j) {
    double m[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    double n = 0, step = 0;
#pragma GCC unroll 16
    for (int i = 0; i < V; ++i) {
      const double* c = cp + 22 * i;
      double s_ = c[1], cx = c[2], cy = c[4], k1 = c[5], k2 = c[6], p1 = c[7], p2 = c[8], k3 = c[9];
      double ui = u[i * ld + j], vi = v[i * ld + j];
      bool ok = std::isfinite(ui) && std::isfinite(vi);
      double si = SC ? sc[i * ld + j] : 1.0;
      ok = ok && (!SC || si >= thr);  // NaN scores compare false
      double wi = ok ? (weighted && SC ? (si > 0 ? si : 0.0) : 1.0) : 0.0;
      bool used = wi > 0;
      w_out[i * ld + j] = wi;
      double yd = (vi - cy) * ify[i];
      double xd = (ui - cx - s_ * yd) * ifx[i];
      yd = used ? yd : 0.0; xd = used ? xd : 0.0;
      double x = xd, y = yd, st = 0;
#pragma GCC unroll 4
      for (int it = 0; it < 3; ++it) {
        double xx = x * x, yy = y * y, xy = x * y, r2 = xx + yy;
        double rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
        double drad = 2 * k1 + r2 * (4 * k2 + r2 * 6 * k3);
        double ex = x * rad + 2 * p1 * xy + p2 * (r2 + 2 * xx) - xd;
        double ey = y * rad + 2 * p2 * xy + p1 * (r2 + 2 * yy) - yd;
        double j00 = rad + xx * drad + 2 * p1 * y + 6 * p2 * x;
        double j01 = xy * drad + 2 * p1 * x + 2 * p2 * y;
        double j11 = rad + yy * drad + 6 * p1 * y + 2 * p2 * x;
        double idet = 1 / (j00 * j11 - j01 * j01);
        double dx = (j11 * ex - j01 * ey) * idet, dy = (j00 * ey - j01 * ex) * idet;
        x -= dx; y -= dy; st = std::fabs(dx) + std::fabs(dy);
      }
      double w2 = used ? wi * wi : 0.0;
      double f0 = w2 * (x * x + y * y), f1 = w2 * x, f2 = w2 * y;
      const double* Ci = C + 40 * i;
#pragma GCC unroll 10
      for (int e = 0; e < 10; ++e) m[e] += f0 * Ci[e] + f1 * Ci[10 + e] + f2 * Ci[20 + e] + w2 * Ci[30 + e];
      n += used ? 1.0 : 0.0;
      step = used && st > step ? st : step;
    }
    double tr = m[0] + m[4] + m[7] + m[9];
    double inv = 1 / (tr > 0 ? tr : 1.0), eps = 1e-12;
    double b00 = m[0] * inv + eps, b01 = m[1] * inv, b02 = m[2] * inv, b11 = m[4] * inv + eps, b12 = m[5] * inv, b22 = m[7] * inv + eps;
    double c0 = m[3] * inv, c1 = m[6] * inv, c2 = m[8] * inv, cc = m[9] * inv + eps;
    double a00 = b11 * b22 - b12 * b12, a01 = b02 * b12 - b01 * b22, a02 = b01 * b12 - b02 * b11;
    double a11 = b00 * b22 - b02 * b02, a12 = b01 * b02 - b00 * b12, a22 = b00 * b11 - b01 * b01;
    double idet = 1 / (b00 * a00 + b01 * a01 + b02 * a02);
    a00 *= idet; a01 *= idet; a02 *= idet; a11 *= idet; a12 *= idet; a22 *= idet;
    double q0 = a00 * c0 + a01 * c1 + a02 * c2, q1 = a01 * c0 + a11 * c1 + a12 * c2, q2 = a02 * c0 + a12 * c1 + a22 * c2;
    double schur = cc - (c0 * q0 + c1 * q1 + c2 * q2);
    double x0 = -q0, x1 = -q1, x2 = -q2;
    for (int it = 0; it < 2; ++it) {
      double z0 = a00 * x0 + a01 * x1 + a02 * x2, z1 = a01 * x0 + a11 * x1 + a12 * x2, z2 = a02 * x0 + a12 * x1 + a22 * x2;
      double g = schur / (1 - (c0 * z0 + c1 * z1 + c2 * z2));
      x0 = g * z0 - q0; x1 = g * z1 - q1; x2 = g * z2 - q2;
    }
    double nn = 1 / std::sqrt(x0 * x0 + x1 * x1 + x2 * x2 + 1);
    double v0 = x0 * nn, v1 = x1 * nn, v2 = x2 * nn, v3 = nn;
    double y0 = b00 * v0 + b01 * v1 + b02 * v2 + c0 * v3, y1 = b01 * v0 + b11 * v1 + b12 * v2 + c1 * v3;
    double y2 = b02 * v0 + b12 * v1 + b22 * v2 + c2 * v3, y3 = c0 * v0 + c1 * v1 + c2 * v2 + cc * v3;
    double rho = y0 * v0 + y1 * v1 + y2 * v2 + y3 * v3;
    double r = std::sqrt((y0 - rho * v0) * (y0 - rho * v0) + (y1 - rho * v1) * (y1 - rho * v1) + (y2 - rho * v2) * (y2 - rho * v2) + (y3 - rho * v3) * (y3 - rho * v3));
    bool ok = n >= 2;
    double nan = std::nan("");
    x0 = ok ? x0 : nan; x1 = ok ? x1 : nan; x2 = ok ? x2 : nan;
    double err = 0;
#pragma GCC unroll 16
    for (int i = 0; i < V; ++i) {
      const double* c = cp + 22 * i;
      double fx = c[0], s_ = c[1], cx = c[2], fy = c[3], cy = c[4], k1 = c[5], k2 = c[6], p1 = c[7], p2 = c[8], k3 = c[9];
      double iz = 1 / (c[16] * x0 + c[17] * x1 + c[18] * x2 + c[21]);
      double a = (c[10] * x0 + c[11] * x1 + c[12] * x2 + c[19]) * iz, b = (c[13] * x0 + c[14] * x1 + c[15] * x2 + c[20]) * iz;
      double ab = a * b, aa = a * a, bb = b * b, r2 = aa + bb;
      double rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
      double xdd = a * rad + 2 * p1 * ab + p2 * (r2 + 2 * aa), ydd = b * rad + p1 * (r2 + 2 * bb) + 2 * p2 * ab;
      double du = fx * xdd + s_ * ydd + cx - u[i * ld + j], dv = fy * ydd + cy - v[i * ld + j];
      double e = std::sqrt(du * du + dv * dv);
      err += w_out[i * ld + j] > 0 ? e : 0.0;
    }
    X0[j] = x0; X1[j] = x1; X2[j] = x2; rep[j] = err / n;
    redo[j] = ok && (!(r <= 1e-9) || step > 1e-5);
  }
}
template <bool SC>
static void dispatch(int V, int64_t N, int64_t ld, const double* u, const double* v, const double* sc,
                     double thr, int weighted, double* w_out, const double* cp, const double* C,
                     double* X0, double* X1, double* X2, double* rep, uint8_t* redo) {
  switch (V) {
    case 2: tri_t<2, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
    case 3: tri_t<3, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
    case 4: tri_t<4, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
    case 5: tri_t<5, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
    case 6: tri_t<6, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
    case 8: tri_t<8, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
    default: tri_t<0, SC>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo); break;
  }
}

extern "C" int pose3d_dlt(int V, int64_t N, int64_t ld, const double* u, const double* v, const double* sc,
                          double thr, int weighted, double* w_out,
                          const double* cp, const double* C, double* X0, double* X1, double* X2,
                          double* rep, uint8_t* redo) {
  if (V < 1 || V > MAX_VIEWS) return -1;
  if (sc)
    dispatch<true>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo);
  else
    dispatch<false>(V, N, ld, u, v, sc, thr, weighted, w_out, cp, C, X0, X1, X2, rep, redo);
  return 0;
}

// (Nf, V, J, 2) pixels -> u, v (V, Nf * J): the kernel's layout, in one pass (torch's permuted
// copy of the same is ~3x slower).
extern "C" int pose3d_split(int64_t Nf, int V, int64_t J, const double* __restrict pts,
                            double* __restrict u, double* __restrict v) {
  const int64_t NJ = Nf * J;
  for (int64_t n = 0; n < Nf; ++n)
    for (int i = 0; i < V; ++i) {
      const double* src = pts + ((n * V + i) * J) * 2;
      double* du = u + i * NJ + n * J;
      double* dv = v + i * NJ + n * J;
      for (int64_t jj = 0; jj < J; ++jj) {
        du[jj] = src[2 * jj];
        dv[jj] = src[2 * jj + 1];
      }
    }
  return 0;
}
