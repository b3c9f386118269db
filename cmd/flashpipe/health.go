package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// processorChecks, sequencerChecks and sinkChecks are each service's readiness
// checks: its NATS connection, the streams it reads and writes, its durable consumer
// and, for the sink, the database.
func processorChecks(nc *nats.Conn, js jetstream.JetStream, c *contract.Contract) []health.Check {
	return readiness(nc, js, c.ReadyStream(), processor.DefaultDurable, c.ResultsStream())
}

func sequencerChecks(nc *nats.Conn, js jetstream.JetStream, c *contract.Contract) []health.Check {
	return readiness(nc, js, c.BatchesStream(), sequencer.DefaultDurable, c.ResultsStream(), c.OrderedStream())
}

func sinkChecks(nc *nats.Conn, js jetstream.JetStream, c *contract.Contract, st flashpipe.Store) []health.Check {
	checks := readiness(nc, js, c.OrderedStream(), sink.DefaultDurable)
	if p, ok := st.(health.Pinger); ok { // both drivers are
		checks = append(checks, health.Database(p))
	}
	return checks
}

// readiness returns the checks of a service on NATS: the connection, the streams it
// reads and writes (the consumer's stream first), and its durable consumer.
func readiness(nc *nats.Conn, js jetstream.JetStream, consumerStream, durable string, streams ...string) []health.Check {
	return []health.Check{
		health.NATS(nc),
		health.Streams(js, append([]string{consumerStream}, streams...)...),
		health.Consumer(js, consumerStream, durable),
	}
}

// HealthcheckCmd asks a health endpoint, for container healthchecks in an image
// without curl or a shell (the flashpipe image has neither).
type HealthcheckCmd struct {
	URL     string        `help:"Endpoint to ask: a service's /readyz or /healthz on its --metrics-addr." default:"http://127.0.0.1:9090/readyz" env:"FLASHPIPE_HEALTHCHECK_URL"`
	Timeout time.Duration `help:"How long to wait for the answer." default:"5s"`
}

// Run exits 0 when the endpoint answers 200, 1 otherwise; it prints the answer.
func (h *HealthcheckCmd) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck %s: %w", h.URL, err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		return &exitError{code: 1, err: errors.New("healthcheck " + h.URL + ": " + resp.Status)}
	}
	return nil
}
