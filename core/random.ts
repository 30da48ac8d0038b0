/**
 * The one seeded PRNG all randomness comes from (init, data order, dropout, LISA's layer draws):
 * xoshiro128**, with a state that checkpoints save and restore, so a resumed run draws exactly what
 * an uninterrupted one would.
 */

/** Serializable generator state: four 32-bit words. */
export type RngState = [number, number, number, number];

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** xoshiro128** seeded from a 32-bit integer. */
export class Rng {
  #s: RngState;

  /** A generator for `seed` (any integer; the same seed gives the same stream). */
  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new Error(`Rng: seed ${seed} is not an integer`);
    const sm = splitmix32(seed);
    this.#s = [sm(), sm(), sm(), sm()];
  }

  /** A generator resumed from `state`. */
  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  /** A copy of the current state. */
  state(): RngState {
    return [...this.#s] as RngState;
  }

  /** Continues from `state` in place (holders of this generator follow), e.g. after a resume. */
  setState(state: RngState): void {
    const word = (w: unknown) =>
      Number.isInteger(w) && (w as number) >= -(2 ** 31) && (w as number) < 2 ** 32;
    if (!Array.isArray(state) || state.length !== 4 || !state.every(word) || state.every((w) => w === 0)) {
      throw new Error(`Rng: state must be four 32-bit integers, got ${JSON.stringify(state)}`);
    }
    this.#s = state.map((w) => w >>> 0) as RngState;
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    for (let i = 0; i < 4; i++) s[i] >>>= 0;
    return result;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`Rng.int: n = ${n} must be a positive integer`);
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Shuffles `a` in place (Fisher–Yates) and returns it. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  /** `k` distinct integers from [0, n), uniformly, in draw order (without replacement). */
  sample(n: number, k: number): number[] {
    if (k > n) throw new Error(`Rng.sample: cannot draw ${k} distinct values from ${n}`);
    const pool = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = i + this.int(n - i);
      [pool[i], pool[j]] = [pool[j], pool[i]];
    }
    return pool.slice(0, k);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
