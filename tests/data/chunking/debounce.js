'use strict';

/**
 * Delay calls to `fn` until `wait` milliseconds have passed without another call.
 * The returned function has `cancel()` and `flush()`.
 */
function debounce(fn, wait, { leading = false, maxWait } = {}) {
  let timer = null;
  let lastArgs = null;
  let lastThis = null;
  let firstCall = 0;

  function invoke() {
    const args = lastArgs;
    const self = lastThis;
    lastArgs = lastThis = null;
    firstCall = 0;
    return fn.apply(self, args);
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      if (lastArgs) {
        invoke();
      }
    }, delay);
  }

  function debounced(...args) {
    const now = Date.now();
    lastArgs = args;
    lastThis = this;
    if (!firstCall) {
      firstCall = now;
      if (leading && !timer) {
        const result = invoke();
        schedule(wait);
        return result;
      }
    }
    if (maxWait !== undefined && now - firstCall >= maxWait) {
      clearTimeout(timer);
      timer = null;
      return invoke();
    }
    schedule(wait);
    return undefined;
  }

  debounced.cancel = function cancel() {
    clearTimeout(timer);
    timer = null;
    lastArgs = lastThis = null;
    firstCall = 0;
  };

  debounced.flush = function flush() {
    if (!timer) {
      return undefined;
    }
    clearTimeout(timer);
    timer = null;
    return lastArgs ? invoke() : undefined;
  };

  return debounced;
}

class Throttle {
  constructor(fn, interval) {
    this.fn = fn;
    this.interval = interval;
    this.last = 0;
  }

  call(...args) {
    const now = Date.now();
    if (now - this.last < this.interval) {
      return false;
    }
    this.last = now;
    this.fn(...args);
    return true;
  }
}

module.exports = { debounce, Throttle };
