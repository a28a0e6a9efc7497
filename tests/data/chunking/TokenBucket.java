package org.example.limits;

import java.time.Clock;
import java.util.Objects;

/**
 * A token bucket: a caller may take a token when one is there; tokens come back at a steady rate
 * up to the bucket's size. Used to pace requests to a rate-limited service.
 */
public final class TokenBucket {
    private final long capacity;
    private final double tokensPerMilli;
    private final Clock clock;
    private double tokens;
    private long lastRefill;

    /**
     * A full bucket of {@code capacity} tokens that refills {@code perSecond} tokens a second.
     */
    public TokenBucket(long capacity, double perSecond, Clock clock) {
        if (capacity < 1 || perSecond <= 0) {
            throw new IllegalArgumentException("capacity and rate must be positive");
        }
        this.capacity = capacity;
        this.tokensPerMilli = perSecond / 1000.0;
        this.clock = Objects.requireNonNull(clock, "clock");
        this.tokens = capacity;
        this.lastRefill = clock.millis();
    }

    /** Takes one token if there is one; never waits. */
    public synchronized boolean tryTake() {
        return tryTake(1);
    }

    /** Takes {@code count} tokens if there are that many; never waits. */
    public synchronized boolean tryTake(long count) {
        refill();
        if (count > tokens) {
            return false;
        }
        tokens -= count;
        return true;
    }

    /** How long, in milliseconds, until {@code count} tokens are there. */
    public synchronized long millisUntil(long count) {
        refill();
        if (count <= tokens) {
            return 0;
        }
        double missing = count - tokens;
        return (long) Math.ceil(missing / tokensPerMilli);
    }

    /** The tokens there now, rounded down. */
    public synchronized long available() {
        refill();
        return (long) tokens;
    }

    private void refill() {
        long now = clock.millis();
        long elapsed = now - lastRefill;
        if (elapsed <= 0) {
            return;
        }
        tokens = Math.min(capacity, tokens + elapsed * tokensPerMilli);
        lastRefill = now;
    }

    @Override
    public String toString() {
        return "TokenBucket{capacity=" + capacity + ", available=" + available() + "}";
    }

    /** Builds buckets with a shared clock. */
    public static final class Builder {
        private long capacity = 10;
        private double perSecond = 1.0;
        private Clock clock = Clock.systemUTC();

        public Builder capacity(long value) {
            this.capacity = value;
            return this;
        }

        public Builder perSecond(double value) {
            this.perSecond = value;
            return this;
        }

        public Builder clock(Clock value) {
            this.clock = value;
            return this;
        }

        public TokenBucket build() {
            return new TokenBucket(capacity, perSecond, clock);
        }
    }
}
