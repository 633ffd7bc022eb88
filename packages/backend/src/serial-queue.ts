/**
 * Runs asynchronous operations one at a time, in the order they were queued. A backend's
 * operations read and write one piece of kernel state (and remember what they wrote), so two of
 * them running at once could both plan from the same state.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** Queues `operation` after everything queued before; a failure does not stop later ones. */
  run<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.tail.then(operation, operation);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
