// What a benchmark reads about a server process from /proc: CPU seconds
// (user + system, all threads) and memory (resident now, and its high-water mark).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** utime + stime of process `pid`, in seconds. */
export function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** Busy CPU seconds of the whole machine so far (all cores, from /proc/stat). */
export function machineBusySeconds() {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1, 9);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return (user + nice + system + irq + softirq + steal) / ticksPerSecond;
}

/** { rssBytes, hwmBytes } of process `pid` (VmRSS and VmHWM). */
export function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssBytes: kib('VmRSS') * 1024, hwmBytes: kib('VmHWM') * 1024 };
}

/** Samples VmRSS of `pid` every `everyMs` until stopped; `stop()` returns the samples. */
export function sampleRss(pid, everyMs = 250) {
  const started = Date.now();
  const samples = [];
  const take = () => {
    try {
      samples.push({ atMs: Date.now() - started, rssBytes: memory(pid).rssBytes });
    } catch {
      // The process is gone: nothing more to sample.
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return samples;
    },
  };
}

export const mib = (bytes) => bytes / 2 ** 20;
