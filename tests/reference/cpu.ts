/** f64 CPU references for every op, written from the math, independent of the kernels. */

/** C = op(A)·op(B) for one batch item; A stored M×K (K×M if transA), B K×N (N×K if transB). */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  transA = false,
  transB = false,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      }
      c[i * n + j] = s;
    }
  }
  return c;
}

/** GPT-2's gelu_new. */
export function geluRef(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(
    x,
    (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  );
}

/** LayerNorm over rows of length c. */
export function layerNormRef(
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  c: number,
  eps = 1e-5,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += c) {
    let mean = 0;
    for (let j = 0; j < c; j++) mean += x[o + j];
    mean /= c;
    let v = 0;
    for (let j = 0; j < c; j++) v += (x[o + j] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / c + eps);
    for (let j = 0; j < c; j++) y[o + j] = (x[o + j] - mean) * rstd * gamma[j] + beta[j];
  }
  return y;
}

/** Mask-weighted mean cross-entropy of rows of logits (length v). */
export function crossEntropyRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  v: number,
): number {
  let s = 0, w = 0;
  for (let r = 0; r < targets.length; r++) {
    if (mask[r] === 0) continue;
    let mx = -Infinity;
    for (let j = 0; j < v; j++) mx = Math.max(mx, logits[r * v + j]);
    let z = 0;
    for (let j = 0; j < v; j++) z += Math.exp(logits[r * v + j] - mx);
    s += mask[r] * (mx + Math.log(z) - logits[r * v + targets[r]]);
    w += mask[r];
  }
  return w === 0 ? 0 : s / w;
}

/** Rows of table [v, d] picked by ids. */
export function embeddingRef(table: ArrayLike<number>, ids: ArrayLike<number>, d: number): Float64Array {
  const out = new Float64Array(ids.length * d);
  for (let i = 0; i < ids.length; i++) for (let j = 0; j < d; j++) out[i * d + j] = table[ids[i] * d + j];
  return out;
}

/** Causal self-attention from packed qkv [B, T, 3C] with nHead heads → [B, T, C]. */
export function attentionRef(
  qkv: ArrayLike<number>,
  b: number,
  t: number,
  c: number,
  nHead: number,
): Float64Array {
  const hd = c / nHead;
  const out = new Float64Array(b * t * c);
  const at = (bb: number, tt: number, col: number) => qkv[(bb * t + tt) * 3 * c + col];
  for (let bb = 0; bb < b; bb++) {
    for (let h = 0; h < nHead; h++) {
      for (let i = 0; i < t; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let d = 0;
          for (let k = 0; k < hd; k++) d += at(bb, i, h * hd + k) * at(bb, j, c + h * hd + k);
          s.push(d / Math.sqrt(hd));
        }
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const z = e.reduce((p, v) => p + v, 0);
        for (let k = 0; k < hd; k++) {
          let o = 0;
          for (let j = 0; j <= i; j++) o += (e[j] / z) * at(bb, j, 2 * c + h * hd + k);
          out[(bb * t + i) * c + h * hd + k] = o;
        }
      }
    }
  }
  return out;
}

/** Gradient of {@link crossEntropyRef} in the logits: mask[r]/Σ mask · (softmax(row r) − onehot(target r)). */
export function crossEntropyGradRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  mask: ArrayLike<number>,
  v: number,
): Float64Array {
  const g = new Float64Array(targets.length * v);
  let w = 0;
  for (let r = 0; r < targets.length; r++) w += mask[r];
  if (w === 0) return g;
  for (let r = 0; r < targets.length; r++) {
    if (mask[r] === 0) continue;
    let mx = -Infinity;
    for (let j = 0; j < v; j++) mx = Math.max(mx, logits[r * v + j]);
    let z = 0;
    for (let j = 0; j < v; j++) z += Math.exp(logits[r * v + j] - mx);
    for (let j = 0; j < v; j++) {
      const p = Math.exp(logits[r * v + j] - mx) / z;
      g[r * v + j] = (mask[r] / w) * (p - (j === targets[r] ? 1 : 0));
    }
  }
  return g;
}

/** RMSNorm over rows of length c (Hugging Face's LlamaRMSNorm): x · rsqrt(mean(x²) + eps) · weight. */
export function rmsNormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  c: number,
  eps: number,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += c) {
    let ms = 0;
    for (let j = 0; j < c; j++) ms += x[o + j] ** 2;
    const rstd = 1 / Math.sqrt(ms / c + eps);
    for (let j = 0; j < c; j++) y[o + j] = x[o + j] * rstd * weight[j];
  }
  return y;
}

/**
 * Hugging Face LLaMA's rotary embedding of x [B, T, H, D] at positions 0..T−1: x·cos + rotate_half(x)·sin,
 * rotate_half(x) = cat(−x[D/2:], x[:D/2]), angle of pair i at t = t / theta^(2i/D).
 */
export function ropeRef(
  x: ArrayLike<number>,
  b: number,
  t: number,
  h: number,
  d: number,
  theta = 10000,
): Float64Array {
  const half = d / 2;
  const y = new Float64Array(b * t * h * d);
  for (let r = 0; r < b * t * h; r++) {
    const pos = Math.floor(r / h) % t;
    for (let i = 0; i < d; i++) {
      const angle = pos / theta ** ((2 * (i % half)) / d);
      const rotated = i < half ? -x[r * d + i + half] : x[r * d + i - half];
      y[r * d + i] = x[r * d + i] * Math.cos(angle) + rotated * Math.sin(angle);
    }
  }
  return y;
}

/** LLaMA's SwiGLU: silu(gate)·up elementwise, silu(g) = g/(1 + e^−g). */
export function swigluRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  return Float64Array.from(gate, (g, i) => (g / (1 + Math.exp(-g))) * up[i]);
}

/**
 * Causal grouped-query attention from packed qkv [B, T, (H + 2·Hkv)·hd] (H q heads, then Hkv k heads,
 * then Hkv v heads; query head h reads k/v head ⌊h / (H/Hkv)⌋, transformers' repeat_kv) → [B, T, H·hd].
 */
export function groupedAttentionRef(
  qkv: ArrayLike<number>,
  b: number,
  t: number,
  h: number,
  hkv: number,
  hd: number,
): Float64Array {
  const w = (h + 2 * hkv) * hd;
  const group = h / hkv;
  const out = new Float64Array(b * t * h * hd);
  for (let bb = 0; bb < b; bb++) {
    for (let hh = 0; hh < h; hh++) {
      const qc = hh * hd;
      const kc = (h + Math.floor(hh / group)) * hd;
      const vc = (h + hkv + Math.floor(hh / group)) * hd;
      for (let i = 0; i < t; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let d = 0;
          for (let x = 0; x < hd; x++) d += qkv[(bb * t + i) * w + qc + x] * qkv[(bb * t + j) * w + kc + x];
          s.push(d / Math.sqrt(hd));
        }
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const z = e.reduce((p, v) => p + v, 0);
        for (let x = 0; x < hd; x++) {
          let o = 0;
          for (let j = 0; j <= i; j++) o += (e[j] / z) * qkv[(bb * t + j) * w + vc + x];
          out[((bb * t + i) * h + hh) * hd + x] = o;
        }
      }
    }
  }
  return out;
}
