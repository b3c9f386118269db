package contract

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	// The bodies are encoded once and decoded at every hop: segmentio's drop-in
	// encoding/json decodes them in about half the time (BenchmarkDecodeEvent).
	"github.com/segmentio/encoding/json"

	"github.com/flashpipe/flashpipe"
)

// Headers every flashpipe message carries (ordered completion events carry no
// position or seq).
const (
	HeaderBatch      = "Flashpipe-Batch"
	HeaderSeq        = "Flashpipe-Seq"
	HeaderPosition   = "Flashpipe-Position"
	HeaderGeneration = "Flashpipe-Generation"
	HeaderKind       = "Flashpipe-Kind"
	// HeaderAPIMode on a ready message carries the batch's API mode (its manifest's
	// api_mode setting: "sync" or "batch") to the processors; absent: the processor's.
	HeaderAPIMode = "Flashpipe-Api-Mode"
	// HeaderStatus is set on results and result events: "ok" or "failed".
	HeaderStatus = "Flashpipe-Status"
)

// MsgID returns the Nats-Msg-Id of a result (and its result event, and a dispatched
// item): the batch id, the item's position and the generation, so publishing the same
// result twice is a no-op within the duplicate window.
func MsgID(batch string, position int64, generation int) string {
	return batch + ":" + strconv.FormatInt(position, 10) + ":" + strconv.Itoa(generation)
}

// ItemMsgID returns the Nats-Msg-Id of a work item on the items stream: the batch id,
// the item's seq and the generation. By seq, not position: publishing the same item
// twice is a no-op, while two items that claim one position are both kept, so the
// scheduler refuses the second at once (position_order) instead of its seq waiting for
// the item deadline.
func ItemMsgID(batch string, seq, generation int) string {
	return batch + ":item:" + strconv.Itoa(seq) + ":" + strconv.Itoa(generation)
}

// ManifestMsgID and CompleteMsgID are the Nats-Msg-Ids of a generation's manifest and
// completion.
func ManifestMsgID(batch string, generation int) string {
	return batch + ":manifest:" + strconv.Itoa(generation)
}
func CompleteMsgID(batch string, generation int) string {
	return batch + ":complete:" + strconv.Itoa(generation)
}

// Keys carries the addressing of a message as its headers state it.
type Keys struct {
	BatchID    string
	Seq        int
	Position   int64
	Generation int
	Kind       flashpipe.EventKind
	Status     flashpipe.Status
}

func setKeys(m *nats.Msg, k Keys) {
	m.Header = make(nats.Header, 6)
	m.Header.Set(HeaderBatch, k.BatchID)
	m.Header.Set(HeaderGeneration, strconv.Itoa(k.Generation))
	if k.Seq > 0 {
		m.Header.Set(HeaderSeq, strconv.Itoa(k.Seq))
		m.Header.Set(HeaderPosition, strconv.FormatInt(k.Position, 10))
	}
	if k.Kind != "" {
		m.Header.Set(HeaderKind, string(k.Kind))
	}
	if k.Status != "" {
		m.Header.Set(HeaderStatus, string(k.Status))
	}
}

// KeysOf reads the addressing headers of a message. Missing numeric headers read as 0.
func KeysOf(h nats.Header) (Keys, error) {
	k := Keys{BatchID: h.Get(HeaderBatch), Kind: flashpipe.EventKind(h.Get(HeaderKind)), Status: flashpipe.Status(h.Get(HeaderStatus))}
	if k.BatchID == "" {
		return k, fmt.Errorf("header %s missing", HeaderBatch)
	}
	var err error
	if v := h.Get(HeaderSeq); v != "" {
		if k.Seq, err = strconv.Atoi(v); err != nil {
			return k, fmt.Errorf("header %s: %w", HeaderSeq, err)
		}
	}
	if v := h.Get(HeaderPosition); v != "" {
		if k.Position, err = strconv.ParseInt(v, 10, 64); err != nil {
			return k, fmt.Errorf("header %s: %w", HeaderPosition, err)
		}
	}
	if v := h.Get(HeaderGeneration); v != "" {
		if k.Generation, err = strconv.Atoi(v); err != nil {
			return k, fmt.Errorf("header %s: %w", HeaderGeneration, err)
		}
	}
	return k, nil
}

func (k Keys) check(batch string, seq int, pos int64, gen int) error {
	if k.BatchID != batch || k.Seq != seq || k.Position != pos || k.Generation != gen {
		return fmt.Errorf("headers (batch %q, seq %d, position %d, generation %d) disagree with body (batch %q, seq %d, position %d, generation %d)",
			k.BatchID, k.Seq, k.Position, k.Generation, batch, seq, pos, gen)
	}
	return nil
}

// ItemMsg encodes a work item for the items stream.
func (c *Contract) ItemMsg(it flashpipe.WorkItem) (*nats.Msg, error) {
	body, err := json.Marshal(it)
	if err != nil {
		return nil, fmt.Errorf("encode item %s/%d: %w", it.BatchID, it.Position, err)
	}
	m := &nats.Msg{Subject: c.ItemSubject(it.BatchID, it.Seq), Data: body}
	setKeys(m, Keys{BatchID: it.BatchID, Seq: it.Seq, Position: it.Position, Generation: it.Generation})
	return m, nil
}

// DecodeItem decodes a work item and checks its headers against its body.
func DecodeItem(h nats.Header, data []byte) (flashpipe.WorkItem, error) {
	var it flashpipe.WorkItem
	k, err := KeysOf(h)
	if err != nil {
		return it, err
	}
	if err := json.Unmarshal(data, &it); err != nil {
		return it, fmt.Errorf("decode item %s/%d: %w", k.BatchID, k.Position, err)
	}
	return it, k.check(it.BatchID, it.Seq, it.Position, it.Generation)
}

// ResultMsg encodes a result for the results stream.
func (c *Contract) ResultMsg(r *flashpipe.Result) (*nats.Msg, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode result %s/%d: %w", r.BatchID, r.Position, err)
	}
	m := &nats.Msg{Subject: c.ResultSubject(r.BatchID, r.Seq), Data: body}
	setKeys(m, Keys{BatchID: r.BatchID, Seq: r.Seq, Position: r.Position, Generation: r.Generation,
		Kind: flashpipe.EventResult, Status: r.Status})
	return m, nil
}

// DecodeResult decodes a result and checks its headers against its body.
func DecodeResult(h nats.Header, data []byte) (*flashpipe.Result, error) {
	k, err := KeysOf(h)
	if err != nil {
		return nil, err
	}
	r := new(flashpipe.Result)
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("decode result %s/%d: %w", k.BatchID, k.Position, err)
	}
	return r, k.check(r.BatchID, r.Seq, r.Position, r.Generation)
}

// ManifestMsg encodes a manifest for the batches stream.
func (c *Contract) ManifestMsg(m flashpipe.Manifest) (*nats.Msg, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest %s: %w", m.BatchID, err)
	}
	msg := &nats.Msg{Subject: c.ManifestSubject(m.BatchID), Data: body}
	setKeys(msg, Keys{BatchID: m.BatchID, Generation: m.Generation, Kind: flashpipe.EventManifest})
	return msg, nil
}

// DecodeManifest decodes a manifest and checks its headers against its body.
func DecodeManifest(h nats.Header, data []byte) (flashpipe.Manifest, error) {
	var m flashpipe.Manifest
	k, err := KeysOf(h)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("decode manifest %s: %w", k.BatchID, err)
	}
	if k.BatchID != m.BatchID || k.Generation != m.Generation {
		return m, fmt.Errorf("manifest headers (batch %q, generation %d) disagree with body (batch %q, generation %d)",
			k.BatchID, k.Generation, m.BatchID, m.Generation)
	}
	return m, nil
}

// EventMsg encodes an ordered event for the ordered stream.
func (c *Contract) EventMsg(ev flashpipe.Event) (*nats.Msg, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Kind, err)
	}
	k := Keys{BatchID: ev.BatchID(), Kind: ev.Kind}
	switch {
	case ev.Manifest != nil:
		k.Generation = ev.Manifest.Generation
	case ev.Result != nil:
		k.Generation, k.Seq, k.Position, k.Status = ev.Result.Generation, ev.Result.Seq, ev.Result.Position, ev.Result.Status
	case ev.Completion != nil:
		k.Generation = ev.Completion.Generation
	}
	m := &nats.Msg{Subject: c.OrderedSubject(k.BatchID), Data: body}
	setKeys(m, k)
	return m, nil
}

// EventMsgID returns the Nats-Msg-Id of an ordered event.
func EventMsgID(ev flashpipe.Event) string {
	switch {
	case ev.Manifest != nil:
		return ManifestMsgID(ev.Manifest.BatchID, ev.Manifest.Generation)
	case ev.Result != nil:
		return MsgID(ev.Result.BatchID, ev.Result.Position, ev.Result.Generation)
	case ev.Completion != nil:
		return CompleteMsgID(ev.Completion.BatchID, ev.Completion.Generation)
	}
	return ""
}

// DecodeEvent decodes an ordered event and checks that it carries what its kind says.
func DecodeEvent(h nats.Header, data []byte) (flashpipe.Event, error) {
	var ev flashpipe.Event
	k, err := KeysOf(h)
	if err != nil {
		return ev, err
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("decode event of batch %s: %w", k.BatchID, err)
	}
	ok := false
	switch ev.Kind {
	case flashpipe.EventManifest:
		ok = ev.Manifest != nil
	case flashpipe.EventResult:
		ok = ev.Result != nil
		if ok {
			if err := k.check(ev.Result.BatchID, ev.Result.Seq, ev.Result.Position, ev.Result.Generation); err != nil {
				return ev, err
			}
		}
	case flashpipe.EventComplete:
		ok = ev.Completion != nil
	}
	if !ok || ev.Kind != k.Kind || ev.BatchID() != k.BatchID {
		return ev, fmt.Errorf("event of batch %s: kind %q (header %q) does not match its body", k.BatchID, ev.Kind, k.Kind)
	}
	return ev, nil
}

// ResultEventMsg wraps a result, as stored in the results stream, into an ordered event
// without decoding it: the sequencer forwards bytes, it does not re-encode them.
func (c *Contract) ResultEventMsg(k Keys, result []byte) *nats.Msg {
	const head, tail = `{"kind":"result","result":`, `}`
	body := make([]byte, 0, len(head)+len(result)+len(tail))
	body = append(append(append(body, head...), result...), tail...)
	m := &nats.Msg{Subject: c.OrderedSubject(k.BatchID), Data: body}
	k.Kind = flashpipe.EventResult
	setKeys(m, k)
	return m
}

// Headers of a refused message (besides the headers it arrived with).
const (
	// HeaderRefusedReason says why the message was refused.
	HeaderRefusedReason = "Flashpipe-Refused-Reason"
	// HeaderRefusedSubject is the subject the message arrived on.
	HeaderRefusedSubject = "Flashpipe-Refused-Subject"
	// HeaderRefusedBy names the service that refused it: "scheduler", "sequencer".
	HeaderRefusedBy = "Flashpipe-Refused-By"
)

// Refusal is a message refused at a door, with the reason.
type Refusal struct {
	// BatchID is the batch the message is about, as far as it can be trusted ("" when
	// it names no valid batch).
	BatchID string
	// Subject, Header and Data are the message as it arrived.
	Subject string
	Header  nats.Header
	Data    []byte
	// Reason says why, By who refused it.
	Reason, By string
	// ID makes a refusal recorded twice (a redelivery) one message: e.g. the refused
	// message's stream and sequence.
	ID string
}

// RefusedMsg encodes a refusal for the refused-messages stream: the message's own
// headers and body, with the reason, the original subject and the refusing service
// added as headers.
func (c *Contract) RefusedMsg(r Refusal) *nats.Msg {
	h := make(nats.Header, len(r.Header)+4)
	for k, v := range r.Header {
		if k != nats.MsgIdHdr && k != "Nats-Expected-Last-Subject-Sequence" {
			h[k] = v
		}
	}
	h.Set(HeaderRefusedReason, r.Reason)
	h.Set(HeaderRefusedSubject, r.Subject)
	h.Set(HeaderRefusedBy, r.By)
	if r.ID != "" {
		h.Set(nats.MsgIdHdr, "refused:"+r.ID)
	}
	return &nats.Msg{Subject: c.RefusedSubject(r.BatchID), Header: h, Data: r.Data}
}

// SubjectKeys reads the batch id and seq that an item, ready or result subject names
// (<prefix>.<kind>.<batch>.<seq>); ok is false for any other subject.
func (c *Contract) SubjectKeys(subject string) (batch string, seq int, ok bool) {
	rest, found := strings.CutPrefix(subject, c.prefix+".")
	if !found {
		return "", 0, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || (parts[0] != "items" && parts[0] != "ready" && parts[0] != "results") {
		return "", 0, false
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil || n < 1 || flashpipe.ValidateBatchID(parts[1]) != nil {
		return "", 0, false
	}
	return parts[1], n, true
}
