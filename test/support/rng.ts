/**
 * mulberry32: a tiny deterministic PRNG, so a failing crash or property test
 * can be replayed from its seed. Returns floats in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [0, bound) from `rng`. */
export function randomInt(rng: () => number, bound: number): number {
  return Math.min(bound - 1, Math.floor(rng() * bound));
}

/** `bytes` bytes that depend only on `seed`: test data that can be rebuilt to compare. */
export function pattern(bytes: number, seed: number): Buffer {
  const rng = mulberry32(seed);
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) out[i] = Math.floor(rng() * 256);
  return out;
}
