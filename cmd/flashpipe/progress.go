package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/flashpipe/flashpipe/internal/batchlog"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/processor"
)

// progressView shows a batch's progress on stderr: a live bar on a terminal (done,
// failed, in flight, rate, ETA), a line every few seconds otherwise.
type progressView struct {
	w        io.Writer
	bar      *progressbar.ProgressBar
	total    int
	start    time.Time
	inflight atomic.Int64
	mu       sync.Mutex
	last     time.Time
	quiet    bool
	stop     context.CancelFunc
	cost     float64 // spent so far, when the results are read (under mu)
	hits     int
}

// addUsage adds a result's usage to the cost shown.
func (p *progressView) addUsage(cost float64, cacheHits int) {
	p.mu.Lock()
	p.cost += cost
	p.hits += cacheHits
	p.mu.Unlock()
}

const plainEvery = 2 * time.Second

func newProgress(ctx context.Context, js jetstream.JetStream, c *contract.Contract, total int, quiet bool) *progressView {
	p := &progressView{w: os.Stderr, total: total, start: time.Now(), quiet: quiet}
	if !quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("items"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	pctx, cancel := context.WithCancel(ctx)
	p.stop = cancel
	go p.pollInFlight(pctx, js, c)
	return p
}

// pollInFlight reads how many items the processors hold (their consumer's ack pending).
func (p *progressView) pollInFlight(ctx context.Context, js jetstream.JetStream, c *contract.Contract) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if cons, err := js.Consumer(ctx, c.ItemsStream(), processor.DefaultDurable); err == nil {
			if info, err := cons.Info(ctx); err == nil {
				p.inflight.Store(int64(info.NumAckPending))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *progressView) update(pr batchlog.Progress) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	inflight := p.inflight.Load()
	if pr.Complete {
		inflight = 0
	}
	desc := fmt.Sprintf("ok %d, failed %d, in flight %d, cache hits %d, $%.4f", pr.OK, pr.Failed, inflight, p.hits, p.cost)
	if p.bar != nil {
		p.bar.Describe(desc)
		_ = p.bar.Set(pr.Done)
		return
	}
	if now := time.Now(); now.Sub(p.last) >= plainEvery || pr.Complete {
		p.last = now
		el := now.Sub(p.start).Seconds()
		rate := float64(pr.Done) / max(el, 1e-9)
		eta := "?"
		if rate > 0 {
			eta = time.Duration(float64(p.total-pr.Done) / rate * float64(time.Second)).Round(time.Second).String()
		}
		fmt.Fprintf(p.w, "progress: %d/%d items, %s, %.0f items/s, ETA %s\n", pr.Done, p.total, desc, rate, eta)
	}
}

func (p *progressView) finish() {
	p.stop()
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
