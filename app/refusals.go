package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe/internal/contract"
)

// Refusal is a message refused at a door, as the refused-messages stream keeps it.
type Refusal struct {
	// BatchID is the batch the message was about ("_" when it named no valid batch).
	BatchID string `json:"batch_id"`
	// Subject is where it was published; By the service that refused it.
	Subject string `json:"subject"`
	By      string `json:"by"`
	// Code is the kind of refusal (internal/refusal's codes: no_manifest,
	// not_in_manifest, mismatch, ...); Reason says the details.
	Code   string    `json:"code"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// RefusalCounts counts the refused messages kept, by batch ("_" for messages that
// named no valid batch).
func (c *Client) RefusalCounts(ctx context.Context) (map[string]int, error) {
	st, err := c.js.Stream(ctx, c.c.RefusedStream())
	if err != nil {
		return nil, fmt.Errorf("refused-messages stream: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(c.c.AllRefused()))
	if err != nil {
		return nil, fmt.Errorf("refused-messages stream: %w", err)
	}
	out := make(map[string]int, len(info.State.Subjects))
	for subject, n := range info.State.Subjects {
		out[c.c.RefusedBatch(subject)] = int(n)
	}
	return out, nil
}

// Refusals returns the last limit refused messages about a batch (all of them when
// limit is 0), oldest first. It reads their headers only.
func (c *Client) Refusals(ctx context.Context, batchID string, limit int) ([]Refusal, error) {
	subject := c.c.RefusedSubject(batchID)
	st, err := c.js.Stream(ctx, c.c.RefusedStream())
	if err != nil {
		return nil, fmt.Errorf("refused-messages stream: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("refused-messages stream: %w", err)
	}
	n := int(info.State.Subjects[subject])
	if n == 0 {
		return []Refusal{}, nil
	}
	skip := 0
	if limit > 0 && n > limit {
		skip = n - limit
	}
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("refused-messages stream: %w", err)
	}
	out := make([]Refusal, 0, n-skip)
	for i := range n {
		msg, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) {
			break // expired while being read
		}
		if err != nil {
			return nil, fmt.Errorf("read refusals of %s: %w", batchID, err)
		}
		if i < skip {
			continue
		}
		r := Refusal{BatchID: c.c.RefusedBatch(msg.Subject()),
			Subject: msg.Headers().Get(contract.HeaderRefusedSubject), By: msg.Headers().Get(contract.HeaderRefusedBy),
			Reason: msg.Headers().Get(contract.HeaderRefusedReason)}
		r.Code, _, _ = strings.Cut(r.Reason, ": ")
		if md, err := msg.Metadata(); err == nil {
			r.Time = md.Timestamp
		}
		out = append(out, r)
	}
	return out, nil
}
