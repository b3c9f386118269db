package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe/app"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressView shows a batch's progress on stderr: a live bar on a terminal (done,
// failed, in flight, rate, ETA, cost), a line every few seconds otherwise.
type progressView struct {
	w      io.Writer
	bar    *progressbar.ProgressBar
	total  int
	start  time.Time
	quiet  bool
	mu     sync.Mutex
	last   time.Time
	paused string // the last reason shown (a new one is shown at once)
}

const plainEvery = 2 * time.Second

func newProgress(total int, quiet bool) *progressView {
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
	return p
}

func (p *progressView) update(pr app.Progress) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	desc := fmt.Sprintf("ok %d, failed %d, in flight %d, cache hits %d, $%.4f", pr.OK, pr.Failed, pr.InFlight, pr.Usage.CacheHits, pr.Usage.Cost)
	if pr.ProviderBatches != "" {
		desc += "; " + pr.ProviderBatches
	}
	if pr.Paused != "" {
		desc += "; " + pr.Paused
	}
	paused := pr.Paused != "" && pr.Paused != p.paused
	p.paused = pr.Paused
	if p.bar != nil {
		p.bar.Describe(desc)
		_ = p.bar.Set(pr.Done)
		return
	}
	if now := time.Now(); now.Sub(p.last) >= plainEvery || pr.Complete || paused {
		p.last = now
		el := now.Sub(p.start).Seconds()
		r := float64(pr.Done) / max(el, 1e-9)
		eta := "?"
		if r > 0 {
			eta = time.Duration(float64(p.total-pr.Done) / r * float64(time.Second)).Round(time.Second).String()
		}
		fmt.Fprintf(p.w, "progress: %d/%d items, %s, %s items/s, ETA %s\n", pr.Done, p.total, desc, rate(r), eta)
	}
}

func (p *progressView) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
