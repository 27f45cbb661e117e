// Calibrated weighted DLT for many points in one pass per point: undistortion (3 Newton steps on
// OpenCV's radial-tangential model, 2 in float and 1 in double), the 10 moments of A^T A, the
// closed-form smallest eigenvector (inverse iteration by block elimination) and the mean
// reprojection error. The same steps as pose3d.geometry.triangulation._k_fused, written as one
// loop over points that the compiler vectorises (SoA tiles; the number of views fixed per
// library, so the view loops unroll). Built at first use per number of views by
// pose3d.geometry.native (g++ -O3 -march=native -DPOSE3D_VIEWS=V); loaded with ctypes. Entry
// point: pose3d_triangulate (end of file), which reads and writes triangulate()'s own layouts.
//
// tri_t on one SoA tile -- u, v: V rows of stride ld >= N, distorted pixels (NaN = missing); sc:
// scores in the same layout or null; a view is used where u, v are finite and (without scores,
// or) score >= thr; its DLT row weight is the score (weighted, clamped at 0) or 1, written to
// w_out (V rows of stride ld; 0 = unused; a double array: a byte store there stops gcc from
// vectorising the loop). cp: V x 22 (fx, skew, cx, fy, cy, k1, k2, p1, p2, k3, R row-major, t);
// C: V x 4 x 10 (the DLT coefficients, from cp). out: X0, X1, X2, rep (N), redo (N) =
// eigen-residual test failed or last Newton step > 1e-5.
#include <cmath>
#include <cstdint>
#include <new>

#ifndef POSE3D_VIEWS
#error "build with -DPOSE3D_VIEWS=<number of views>"
#endif
constexpr int V = POSE3D_VIEWS;  // fixed per library: the view loops unroll, the point loop vectorises
// at most 8 views, unrolled fully (31 views took 8 min to compile; a runtime view loop ran 5x slower)
#if POSE3D_VIEWS <= 8
#define VIEW_LOOP _Pragma("GCC unroll 8")
#else
#error "at most 8 views (pose3d.geometry.native.MAX_VIEWS)"
#endif

// OpenCV's radial-tangential model: normalised (x, y) -> distorted (dx_, dy_); r2 and the radial
// factor rad are returned for the Jacobian.
template <typename T>
static inline void distort(T x, T y, T k1, T k2, T p1, T p2, T k3, T& dx_, T& dy_, T& r2, T& rad) {
  T xx = x * x, yy = y * y, xy = x * y;
  r2 = xx + yy;
  rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
  dx_ = x * rad + 2 * p1 * xy + p2 * (r2 + 2 * xx);
  dy_ = y * rad + 2 * p2 * xy + p1 * (r2 + 2 * yy);
}

// One Newton step on that model: (x, y) -> the undistorted point whose distortion is (xd, yd);
// returns |dx| + |dy|.
template <typename T>
static inline T newton_step(T& x, T& y, T xd, T yd, T k1, T k2, T p1, T p2, T k3) {
  T xx = x * x, yy = y * y, xy = x * y, r2, rad, ex, ey;
  distort(x, y, k1, k2, p1, p2, k3, ex, ey, r2, rad);
  ex -= xd; ey -= yd;
  T drad = 2 * k1 + r2 * (4 * k2 + r2 * 6 * k3);
  T j00 = rad + xx * drad + 2 * p1 * y + 6 * p2 * x;
  T j01 = xy * drad + 2 * p1 * x + 2 * p2 * y;
  T j11 = rad + yy * drad + 6 * p1 * y + 2 * p2 * x;
  T idet = 1 / (j00 * j11 - j01 * j01);
  T dx = (j11 * ex - j01 * ey) * idet, dy = (j00 * ey - j01 * ex) * idet;
  x -= dx; y -= dy;
  return std::fabs(dx) + std::fabs(dy);
}

// noinline: inlined into the tile loop it ran ~6 % slower (gcc 12)
template <bool SC>
__attribute__((noinline)) static void tri_t(int64_t N, int64_t ld, const double* __restrict u, const double* __restrict v,
                  const double* __restrict sc, double thr, int weighted, double* __restrict w_out,
                  const double* __restrict cp, const double* __restrict C,
                  double* __restrict X0, double* __restrict X1, double* __restrict X2,
                  double* __restrict rep, uint8_t* __restrict redo) {
  double ifx[V], ify[V];  // reciprocal focal lengths
  for (int i = 0; i < V; ++i) { ifx[i] = 1 / cp[22 * i]; ify[i] = 1 / cp[22 * i + 3]; }
#pragma omp simd
  for (int64_t j = 0; j < N; ++j) {
    double m[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    double n = 0, step = 0;
VIEW_LOOP
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
      // 2 float steps (16 lanes, cheaper divisions), then 1 double step: error ~(float eps)^2
      float xf = (float)xd, yf = (float)yd;
      const float xdf = xf, ydf = yf;
#pragma GCC unroll 4
      for (int it = 0; it < 2; ++it) newton_step<float>(xf, yf, xdf, ydf, k1, k2, p1, p2, k3);
      double x = xf, y = yf;
      double st = newton_step<double>(x, y, xd, yd, k1, k2, p1, p2, k3);
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
VIEW_LOOP
    for (int i = 0; i < V; ++i) {
      const double* c = cp + 22 * i;
      double fx = c[0], s_ = c[1], cx = c[2], fy = c[3], cy = c[4], k1 = c[5], k2 = c[6], p1 = c[7], p2 = c[8], k3 = c[9];
      double iz = 1 / (c[16] * x0 + c[17] * x1 + c[18] * x2 + c[21]);
      double a = (c[10] * x0 + c[11] * x1 + c[12] * x2 + c[19]) * iz, b = (c[13] * x0 + c[14] * x1 + c[15] * x2 + c[20]) * iz;
      double xdd, ydd, r2, rad;
      distort(a, b, k1, k2, p1, p2, k3, xdd, ydd, r2, rad);
      double du = fx * xdd + s_ * ydd + cx - u[i * ld + j], dv = fy * ydd + cy - v[i * ld + j];
      double e = std::sqrt(du * du + dv * dv);
      err += w_out[i * ld + j] > 0 ? e : 0.0;
    }
    X0[j] = x0; X1[j] = x1; X2[j] = x2; rep[j] = err / n;
    redo[j] = ok && (!(r <= 1e-9) || step > 1e-5);
  }
}
// points per tile: the SoA copies of a tile stay in L1 (V = 4: 256 points, 24 KiB)
constexpr int64_t TILE = V <= 4 ? 256 : (1024 / V < 32 ? 32 : 1024 / V / 16 * 16);

// The whole DLT on triangulate()'s own layout, points [p0, p1) of the flat (frame, joint) index:
// pts (Nf, V, J, 2) distorted pixels, sc (Nf, V, J) scores or null -> X (Nf * J, 3), rep (Nf * J),
// used (Nf, V, J) (1 = view used), redo (Nf * J) as tri_t; counts[0] += joints with >= 2 views,
// counts[1] += joints to redo. Per tile: gather into SoA, tri_t, scatter back (no full-size
// intermediate arrays, so the layout changes cost L1 traffic only).
extern "C" int pose3d_triangulate(int views, int64_t J, int64_t p0, int64_t p1, const double* pts, const double* sc,
                                  double thr, int weighted, const double* cp,
                                  double* X, double* rep, uint8_t* used, uint8_t* redo, int64_t* counts) {
  if (views != V || J < 1) return -1;
  // the DLT coefficients (as triangulation._dlt_coefficients): with P = [R | t] and f = (fx + fy) / 2,
  // f^2 times p3 p3^T, -(p3 p1^T + p1 p3^T), -(p3 p2^T + p2 p3^T), p1 p1^T + p2 p2^T, upper triangles
  double C[V * 40];
  for (int i = 0; i < V; ++i) {
    const double* c = cp + 22 * i;
    double P[3][4], f = (c[0] + c[3]) / 2, f2 = f * f;
    for (int r = 0; r < 3; ++r) {
      for (int k = 0; k < 3; ++k) P[r][k] = c[10 + 3 * r + k];
      P[r][3] = c[19 + r];
    }
    int e = 0;
    for (int a = 0; a < 4; ++a)
      for (int b = a; b < 4; ++b, ++e) {
        C[40 * i + e] = f2 * P[2][a] * P[2][b];
        C[40 * i + 10 + e] = -f2 * (P[2][a] * P[0][b] + P[0][a] * P[2][b]);
        C[40 * i + 20 + e] = -f2 * (P[2][a] * P[1][b] + P[1][a] * P[2][b]);
        C[40 * i + 30 + e] = f2 * (P[0][a] * P[0][b] + P[1][a] * P[1][b]);
      }
  }
  const bool has_sc = sc != nullptr;
  double* buf = new (std::nothrow) double[TILE * (4 * V + 3)];
  if (!buf) return -2;
  double *ub = buf, *vb = ub + TILE * V, *sb = vb + TILE * V, *wb = sb + TILE * V;
  double *x0 = wb + TILE * V, *x1 = x0 + TILE, *x2 = x1 + TILE;
  uint8_t rb[TILE];
  int64_t n_ok = 0, n_redo = 0;
  for (int64_t a = p0; a < p1; a += TILE) {
    const int64_t nt = p1 - a < TILE ? p1 - a : TILE;
    // gather: runs of consecutive joints of one frame are contiguous (stride 2) per view; with
    // one joint per frame the tile is a run of frames (runs of 1 would cost a division each)
    if (J == 1) {
      for (int64_t r = 0; r < nt; ++r)
        for (int i = 0; i < V; ++i) {
          const int64_t idx = (a + r) * V + i;
          ub[i * TILE + r] = pts[2 * idx];
          vb[i * TILE + r] = pts[2 * idx + 1];
          if (has_sc) sb[i * TILE + r] = sc[idx];
        }
    } else for (int64_t t = 0, q = a; t < nt;) {
      const int64_t n = q / J, jj = q % J, run = J - jj < nt - t ? J - jj : nt - t;
      for (int i = 0; i < V; ++i) {
        const int64_t idx = (n * V + i) * J + jj;
        for (int64_t r = 0; r < run; ++r) {
          ub[i * TILE + t + r] = pts[2 * (idx + r)];
          vb[i * TILE + t + r] = pts[2 * (idx + r) + 1];
        }
        if (has_sc)
          for (int64_t r = 0; r < run; ++r) sb[i * TILE + t + r] = sc[idx + r];
      }
      t += run; q += run;
    }
    if (has_sc)
      tri_t<true>(nt, TILE, ub, vb, sb, thr, weighted, wb, cp, C, x0, x1, x2, rep + a, rb);
    else
      tri_t<false>(nt, TILE, ub, vb, nullptr, thr, weighted, wb, cp, C, x0, x1, x2, rep + a, rb);
    // scatter: X interleaved, redo, the counts, used (per view, runs as in the gather)
    double* o = X + 3 * a;
    for (int64_t t = 0; t < nt; ++t) {
      o[3 * t] = x0[t]; o[3 * t + 1] = x1[t]; o[3 * t + 2] = x2[t];
    }
    int64_t ok = 0, rd = 0;
    for (int64_t t = 0; t < nt; ++t) {
      ok += x0[t] == x0[t];
      rd += rb[t];
      redo[a + t] = rb[t];
    }
    n_ok += ok; n_redo += rd;
    if (J == 1) {
      for (int64_t r = 0; r < nt; ++r)
        for (int i = 0; i < V; ++i) used[(a + r) * V + i] = wb[i * TILE + r] > 0;
    } else for (int64_t t = 0, q = a; t < nt;) {
      const int64_t n = q / J, jj = q % J, run = J - jj < nt - t ? J - jj : nt - t;
      for (int i = 0; i < V; ++i) {
        uint8_t* dst = used + (n * V + i) * J + jj;
        for (int64_t r = 0; r < run; ++r) dst[r] = wb[i * TILE + t + r] > 0;
      }
      t += run; q += run;
    }
  }
  delete[] buf;
  counts[0] += n_ok;
  counts[1] += n_redo;
  return 0;
}
