// Package ring keeps the last N samples of a metric and answers simple
// questions about them: the mean, the maximum and a percentile.
package ring

import (
	"errors"
	"sort"
	"sync"
)

// ErrEmpty is returned when a question needs at least one sample.
var ErrEmpty = errors.New("ring: no samples yet")

// Buffer is a fixed-size ring of float64 samples, safe for concurrent use.
type Buffer struct {
	mu      sync.Mutex
	samples []float64
	next    int
	full    bool
}

// New returns a buffer that remembers the last size samples.
func New(size int) *Buffer {
	if size < 1 {
		size = 1
	}
	return &Buffer{samples: make([]float64, size)}
}

// Add records one sample, dropping the oldest once the buffer is full.
func (b *Buffer) Add(value float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.samples[b.next] = value
	b.next++
	if b.next == len(b.samples) {
		b.next = 0
		b.full = true
	}
}

// Len reports how many samples the buffer holds now.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.full {
		return len(b.samples)
	}
	return b.next
}

// snapshot copies the samples in the order they were added.
func (b *Buffer) snapshot() []float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.full {
		out := make([]float64, b.next)
		copy(out, b.samples[:b.next])
		return out
	}
	out := make([]float64, 0, len(b.samples))
	out = append(out, b.samples[b.next:]...)
	out = append(out, b.samples[:b.next]...)
	return out
}

// Mean is the average of the samples held.
func (b *Buffer) Mean() (float64, error) {
	values := b.snapshot()
	if len(values) == 0 {
		return 0, ErrEmpty
	}
	total := 0.0
	for _, value := range values {
		total += value
	}
	return total / float64(len(values)), nil
}

// Max is the largest sample held.
func (b *Buffer) Max() (float64, error) {
	values := b.snapshot()
	if len(values) == 0 {
		return 0, ErrEmpty
	}
	best := values[0]
	for _, value := range values[1:] {
		if value > best {
			best = value
		}
	}
	return best, nil
}

// Percentile returns the sample below which p percent of the samples fall,
// using the nearest-rank method. p is clamped to the range [0, 100].
func (b *Buffer) Percentile(p float64) (float64, error) {
	values := b.snapshot()
	if len(values) == 0 {
		return 0, ErrEmpty
	}
	if p < 0 {
		p = 0
	}
	if p > 100 {
		p = 100
	}
	sort.Float64s(values)
	rank := int(p/100*float64(len(values))+0.5) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(values) {
		rank = len(values) - 1
	}
	return values[rank], nil
}
