// A small rate-limited job queue: real TypeScript for the code splitter test.

export type JobState = "queued" | "running" | "done" | "failed";

export interface Job<T> {
  id: number;
  name: string;
  run: () => Promise<T>;
  state: JobState;
  attempts: number;
  result?: T;
  error?: string;
}

export interface QueueOptions {
  concurrency: number;
  perSecond: number;
  maxAttempts: number;
}

const DEFAULTS: QueueOptions = { concurrency: 2, perSecond: 10, maxAttempts: 3 };

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly capacity: number, private readonly refillPerSecond: number) {
    this.tokens = capacity;
    this.last = Date.now();
  }

  take(now: number = Date.now()): boolean {
    const elapsed = (now - this.last) / 1000;
    this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.refillPerSecond);
    this.last = now;
    if (this.tokens < 1) {
      return false;
    }
    this.tokens -= 1;
    return true;
  }
}

export class JobQueue<T> {
  private readonly jobs: Job<T>[] = [];
  private readonly bucket: TokenBucket;
  private readonly options: QueueOptions;
  private running = 0;
  private nextId = 1;

  constructor(options: Partial<QueueOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.bucket = new TokenBucket(this.options.perSecond, this.options.perSecond);
  }

  add(name: string, run: () => Promise<T>): Job<T> {
    const job: Job<T> = { id: this.nextId++, name, run, state: "queued", attempts: 0 };
    this.jobs.push(job);
    return job;
  }

  pending(): Job<T>[] {
    return this.jobs.filter((job) => job.state === "queued");
  }

  async drain(): Promise<Job<T>[]> {
    while (this.pending().length > 0 || this.running > 0) {
      const next = this.pending()[0];
      if (next && this.running < this.options.concurrency && this.bucket.take()) {
        void this.start(next);
      } else {
        await sleep(20);
      }
    }
    return this.jobs;
  }

  private async start(job: Job<T>): Promise<void> {
    job.state = "running";
    job.attempts += 1;
    this.running += 1;
    try {
      job.result = await job.run();
      job.state = "done";
    } catch (err) {
      job.error = err instanceof Error ? err.message : String(err);
      job.state = job.attempts < this.options.maxAttempts ? "queued" : "failed";
    } finally {
      this.running -= 1;
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function summarize<T>(jobs: Job<T>[]): Record<JobState, number> {
  const counts: Record<JobState, number> = { queued: 0, running: 0, done: 0, failed: 0 };
  for (const job of jobs) {
    counts[job.state] += 1;
  }
  return counts;
}
