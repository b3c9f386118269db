package llmsim

import (
	"strconv"
	"strings"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/llm/wire"
	"github.com/flashpipe/flashpipe/internal/stages"
)

// Deterministic, plausible answers: every choice is a pure function of the input, so
// the same input gives the same bytes. The words come from fixed lists, picked by a
// hash of the term.

var (
	metaphorNouns = [...]string{
		"lantern", "umbrella", "teapot", "bicycle", "drum", "kite", "compass", "violin",
		"mirror", "anchor", "accordion", "pineapple", "typewriter", "snow globe", "trumpet",
		"hourglass", "goldfish bowl", "rubber duck", "birdcage", "paper boat", "honey jar",
		"feather duster", "alarm clock", "watering can",
	}
	metaphorActions = [...]string{
		"spinning on one leg", "melting into syrup", "ringing like a fire bell", "glowing bright red",
		"whispering the word", "bouncing off the walls", "unfolding like a map", "steaming furiously",
		"tap-dancing", "swelling like a balloon", "singing off-key", "juggling eggs",
		"shivering in the draught", "counting out loud", "spilling golden sand", "bowing politely",
	}
	locations = [...]string{
		"front door", "hallway mirror", "kitchen sink", "dining table", "staircase",
		"living-room sofa", "bathtub", "bedroom wardrobe", "balcony railing", "garden gate",
		"bookshelf", "fireplace", "laundry basket", "piano bench",
	}
	anchorObjects = [...]string{
		"brass doorknob", "coat hook", "dish rack", "salt shaker", "banister", "TV remote",
		"shower curtain", "clothes hanger", "flower pot", "mailbox", "reading lamp", "iron poker",
		"soap dish", "metronome",
	}
	sensations = [...]string{
		"the sharp smell of burnt sugar", "a cold metal click under your fingers",
		"the crackle of sesame oil in a hot pan", "the warm scent of freshly cooked rice",
		"a sticky, honey-like texture on your palm", "the hiss of a kettle about to boil",
		"a gust of icy wind on the back of your neck", "the bitter taste of strong green tea",
		"a soft velvet brush against your wrist", "the low rumble of a subway train below",
		"the sour tang of kimchi left out overnight", "sunlight warm as a blanket on your face",
	}
	keywordPool = [...]string{
		"사람", "시간", "마음", "생각", "사랑", "친구", "학교", "집", "물", "말", "일", "눈",
		"손", "길", "밥", "날", "이름", "가족", "나라", "세상", "공부", "음식", "하늘", "바다",
	}
	comparisonPool = [...]string{
		"것", "때", "곳", "분", "쪽", "데", "점", "바", "수", "줄", "뿐", "만큼",
	}
	hanjaPool = [...]struct{ hanja, meaning string }{
		{"男性", "male, masculinity"}, {"南星", "the southern star"}, {"成功", "success"},
		{"聲明", "a public statement"}, {"城門", "a castle gate"}, {"星座", "a constellation"},
		{"性格", "personality"}, {"姓名", "a full name"}, {"水道", "waterworks"}, {"首都", "a capital city"},
		{"修道", "ascetic practice"}, {"手當", "an allowance"}, {"事故", "an accident"}, {"思考", "thinking"},
	}
	concepts = [...]string{
		"identity", "motion", "feeling", "time", "place", "quantity", "relation", "quality",
		"action", "state", "reference", "emphasis",
	}
)

// hash64 is FNV-1a over the term and its type.
func hash64(term, typ string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(term); i++ {
		h ^= uint64(term[i])
		h *= 1099511628211
	}
	h ^= 0xff // separator: no UTF-8 byte is 0xff
	h *= 1099511628211
	for i := 0; i < len(typ); i++ {
		h ^= uint64(typ[i])
		h *= 1099511628211
	}
	return h
}

func pick[T any](list []T, h uint64, salt uint) T {
	return list[(h>>salt^h>>(salt+29))%uint64(len(list))]
}

// Romanization of Hangul syllables into an IPA-like transcription: initial, medial
// and final jamo, syllables joined with '.', no sound changes across syllables.
var (
	ipaInitials = [...]string{"k", "k͈", "n", "t", "t͈", "ɾ", "m", "p", "p͈", "s", "s͈", "", "tɕ", "t͈ɕ", "tɕʰ", "kʰ", "tʰ", "pʰ", "h"}
	ipaMedials  = [...]string{"a", "ɛ", "ja", "jɛ", "ʌ", "e", "jʌ", "je", "o", "wa", "wɛ", "ø", "jo", "u", "wʌ", "we", "wi", "ju", "ɯ", "ɰi", "i"}
	ipaFinals   = [...]string{"", "k̚", "k̚", "k̚", "n", "n", "n", "t̚", "l", "k̚", "m", "l", "l", "l", "p̚", "l", "m", "p̚", "p̚", "t̚", "t̚", "ŋ", "t̚", "t̚", "k̚", "t̚", "p̚", "t̚"}
)

// IPA returns a deterministic IPA-like transcription of term: Hangul syllables are
// decomposed into jamo, other letters are kept (lower-cased), spaces separate words.
func IPA(term string) string {
	var sb strings.Builder
	sb.Grow(len(term) * 2)
	prevSyllable := false
	for _, r := range term {
		switch {
		case r >= 0xAC00 && r <= 0xD7A3:
			s := int(r - 0xAC00)
			if prevSyllable {
				sb.WriteByte('.')
			}
			sb.WriteString(ipaInitials[s/(21*28)])
			sb.WriteString(ipaMedials[(s%(21*28))/28])
			sb.WriteString(ipaFinals[s%28])
			prevSyllable = true
		case r == ' ' || r == '\t':
			sb.WriteByte(' ')
			prevSyllable = false
		default:
			if r >= 'A' && r <= 'Z' {
				r += 'a' - 'A'
			}
			sb.WriteRune(r)
			prevSyllable = false
		}
	}
	if sb.Len() == 0 {
		return "?"
	}
	return sb.String()
}

// scene is everything the answers of one term are built from.
type scene struct {
	term, pos, ipa, gloss       string
	noun, action, location      string
	anchor, sensory, concept    string
	vs, termIPA                 string
	hasOther, hasUsage, hasComp bool
	homonyms                    int
	h                           uint64
}

func newScene(term, typ string) scene {
	pos := flashpipe.NormalizeType(typ)
	if !flashpipe.IsKnownType(pos) {
		pos = flashpipe.TypeUnknown
	}
	h := hash64(term, pos)
	s := scene{
		term:     term,
		pos:      pos,
		ipa:      IPA(term),
		noun:     pick(metaphorNouns[:], h, 3),
		action:   pick(metaphorActions[:], h, 7),
		location: pick(locations[:], h, 11),
		anchor:   pick(anchorObjects[:], h, 13),
		sensory:  pick(sensations[:], h, 17),
		concept:  pick(concepts[:], h, 19),
		vs:       pick(comparisonPool[:], h, 23),
		hasOther: h&1 == 0,
		hasUsage: h&2 == 0,
		hasComp:  h&4 == 0,
		homonyms: int(h>>40) % 3,
		h:        h,
	}
	s.gloss = glossFor(pos, term)
	return s
}

func glossFor(pos, term string) string {
	switch pos {
	case "noun":
		return "a thing or idea called " + term + " (simulated gloss)"
	case "verb":
		return "to do what " + term + " describes (simulated gloss)"
	case "adjective":
		return "being the way " + term + " describes (simulated gloss)"
	case "adverb":
		return "in the manner of " + term + " (simulated gloss)"
	case "particle":
		return "the particle " + term + ", marking a grammatical role (simulated gloss)"
	case "pronoun":
		return "the pronoun " + term + ", pointing to a person or thing (simulated gloss)"
	}
	return "the " + pos + " " + term + " (simulated gloss)"
}

// jsonWriter appends the members of one JSON object in a fixed order, writing every
// string straight into the buffer (in parts, escaped), without building it first.
type jsonWriter struct {
	b     []byte
	first bool
	skip  string // a member left out (for invalid answers)
}

func (w *jsonWriter) key(k string) bool {
	if k == w.skip {
		return false
	}
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
	return true
}

// str writes member k, the concatenation of parts.
func (w *jsonWriter) str(k string, parts ...string) {
	if w.key(k) {
		w.b = appendParts(w.b, parts...)
	}
}

// optStr writes member k as the concatenation of parts, or null.
func (w *jsonWriter) optStr(k string, ok bool, parts ...string) {
	if !w.key(k) {
		return
	}
	if !ok {
		w.b = append(w.b, "null"...)
		return
	}
	w.b = appendParts(w.b, parts...)
}

func appendParts(b []byte, parts ...string) []byte {
	b = append(b, '"')
	for _, p := range parts {
		b = wire.AppendEscaped(b, p)
	}
	return append(b, '"')
}

func (w *jsonWriter) open() { w.b = append(w.b, '{'); w.first = true }
func (w *jsonWriter) close() {
	w.b = append(w.b, '}')
	w.first = false
}

// appendStage1 appends the stage 1 answer for in; skip names a field to leave out.
func appendStage1(b []byte, in stages.Input, skip string) []byte {
	s := newScene(in.Term, in.Type)
	t := in.Term
	w := jsonWriter{b: b, skip: skip}
	w.open()
	if w.key("term_number") {
		w.b = strconv.AppendInt(w.b, in.TermNumber, 10)
	}
	w.str("term", t, "[", s.ipa, "]")
	w.str("ipa", s.ipa)
	w.str("pos", s.pos)
	w.str("primary_meaning", s.gloss)
	w.optStr("other_meanings", s.hasOther, "a figurative sense of ", t, "; a sense used in set phrases")
	w.str("metaphor", "At the ", s.location, ", a ", s.noun, " is ", s.action, " beside the ", s.anchor, " while someone keeps saying ", t, ".")
	w.str("metaphor_noun", s.noun)
	w.str("metaphor_action", s.action)
	w.str("suggested_location", s.location)
	w.str("anchor_object", s.anchor)
	w.str("anchor_sensory", s.sensory)
	w.str("explanation", "The ", s.noun, " stands for ", s.gloss, "; its ", s.action, " echoes the sound [", s.ipa, "], and the ",
		s.anchor, " at the ", s.location, " brings the scene back.")
	w.optStr("usage_context", s.hasUsage, "Common in everyday speech; polite with strangers, plain with friends. e.g. ", t, " 있어요?")
	if w.key("comparison") {
		if s.hasComp {
			w.b = append(w.b, `{"vs":`...)
			w.b = appendParts(w.b, s.vs)
			w.b = append(w.b, `,"nuance":`...)
			w.b = appendParts(w.b, s.vs, " is more general; ", t, " is more specific about ", s.concept, ".")
			w.b = append(w.b, '}')
		} else {
			w.b = append(w.b, "null"...)
		}
	}
	if w.key("homonyms") {
		w.b = append(w.b, '[')
		for i := 0; i < s.homonyms; i++ {
			hz := hanjaPool[(s.h>>(8*i)+uint64(i))%uint64(len(hanjaPool))]
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = append(w.b, `{"hanja":`...)
			w.b = appendParts(w.b, hz.hanja)
			w.b = append(w.b, `,"reading":`...)
			w.b = appendParts(w.b, t)
			w.b = append(w.b, `,"meaning":`...)
			w.b = appendParts(w.b, hz.meaning)
			w.b = append(w.b, `,"differentiator":`...)
			w.b = appendParts(w.b, "appears in formal, written contexts about ", hz.meaning)
			w.b = append(w.b, '}')
		}
		w.b = append(w.b, ']')
	}
	if w.key("korean_keywords") {
		w.b = append(w.b, '[')
		n := 3 + int(s.h>>50)%4
		for i := 0; i < n; i++ {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			// Distinct picks: a step of 7 is coprime with the pool's 24.
			w.b = appendParts(w.b, keywordPool[(s.h>>20+uint64(7*i))%uint64(len(keywordPool))])
		}
		w.b = append(w.b, ']')
	}
	w.close()
	return w.b
}

// analysisScene is the scene of a stage 2 input: its analysis where given, else the
// one stage 1 would have produced.
func analysisScene(in stages.Input) scene {
	s := newScene(in.Term, in.Type)
	s.termIPA = ""
	if a := in.Analysis; a != nil {
		if a.POS != "" {
			s.pos = a.POS
		}
		if a.IPA != "" {
			s.ipa = a.IPA
		}
		if a.PrimaryMeaning != "" {
			s.gloss = a.PrimaryMeaning
		}
		if a.MetaphorNoun != "" {
			s.noun = a.MetaphorNoun
		}
		if a.MetaphorAction != "" {
			s.action = a.MetaphorAction
		}
		if a.SuggestedLocation != "" {
			s.location = a.SuggestedLocation
		}
		if a.AnchorObject != "" {
			s.anchor = a.AnchorObject
		}
		if a.AnchorSensory != "" {
			s.sensory = a.AnchorSensory
		}
		if a.Comparison != nil && a.Comparison.Vs != "" {
			s.vs = a.Comparison.Vs
		}
		s.termIPA = a.Term
	}
	return s
}

// text builds a card text from sentences, keeping a word count: a sentence that
// would take the text over max words is left out, and once the text reaches full
// words no more are added.
type text struct {
	b         []byte
	words     int
	full, max int
}

func (t *text) sentence(parts ...string) {
	if t.words >= t.full {
		return
	}
	mark := len(t.b)
	if mark > 0 {
		t.b = append(t.b, ' ')
	}
	for _, p := range parts {
		t.b = append(t.b, p...)
	}
	n := countWords(t.b[mark:])
	if t.words+n > t.max {
		t.b = t.b[:mark]
		return
	}
	t.words += n
}

// countWords counts runs of non-space bytes (the generated text is ASCII-spaced).
func countWords(s []byte) int {
	n := 0
	inWord := false
	for _, c := range s {
		space := c == ' ' || c == '\n' || c == '\t'
		if !space && !inWord {
			n++
		}
		inWord = !space
	}
	return n
}

// Card text limits (domain: front 15-30 words, back 80-150).
const (
	backMin, backFull, backMax = 80, 100, 150
)

// appendStage2 appends the stage 2 answer for in; skipFront leaves the first card's
// front out (an invalid answer). scratch is a reusable buffer.
func appendStage2(b []byte, in stages.Input, skipFront bool, scratch []byte) ([]byte, []byte) {
	s := analysisScene(in)
	t := in.Term
	termIPA := s.termIPA
	if termIPA == "" {
		termIPA = t + "[" + s.ipa + "]"
	}
	formality := "formal"
	example := []string{t, "에 대해 이야기해 주시겠어요?"}
	if s.h&8 == 0 {
		formality = "casual"
		example = []string{t, " 얘기 좀 해 줘."}
	}
	hz := hanjaPool[s.h%uint64(len(hanjaPool))]
	metaphorTag := strings.ReplaceAll(s.noun, " ", "_")

	card := func(i int, tab, honorific string, front func(*jsonWriter), back func(*text), tags ...string) {
		if i > 0 {
			b = append(b, ',')
		}
		w := jsonWriter{b: b}
		if skipFront && i == 0 {
			w.skip = "front"
		}
		w.open()
		w.str("tab_name", tab)
		w.str("primer", stages.Primer(s.pos, in.TermNumber, t, tab))
		front(&w)
		tb := text{b: scratch[:0], full: backFull, max: backMax}
		back(&tb)
		for tb.words < backMin { // long analysis fields can crowd sentences out
			tb.sentence("Say the word aloud once more and picture the whole scene again.")
		}
		scratch = tb.b
		if w.key("back") {
			w.b = wire.AppendBytes(w.b, tb.b)
		}
		w.str("tags", tags...)
		w.str("honorific_level", honorific)
		w.close()
		b = w.b
	}

	b = append(b, `{"cards":[`...)
	card(0, stages.TabScene, "neutral",
		func(w *jsonWriter) {
			w.str("front", "At the ", s.location, ", a ", s.noun, " is ", s.action, " beside the ", s.anchor,
				". Which Korean word lives here, and what does it mean?")
		},
		func(x *text) {
			x.sentence(t, " means ", s.gloss, ".")
			x.sentence("Say it as [", s.ipa, "].")
			x.sentence("Picture the ", s.location, ": a ", s.noun, " is ", s.action, " right beside the ", s.anchor, ".")
			x.sentence("Notice ", s.sensory, ", and let that sensation pin the scene in place.")
			x.sentence("The ", s.noun, " stands for the meaning, and its movement echoes the sound of the word.")
			x.sentence("Walk through it slowly: the colour of the light, the temperature of the air, the grain of the ", s.anchor, " under your hand.")
			x.sentence("Every time you pass the ", s.location, " in your memory palace, the ", s.noun, " is still there, waiting for you to say ", t, " out loud.")
			x.sentence("Say the word twice, then look at the whole scene once more before you move on to the next room.")
		},
		"term:", t, ",pos:", s.pos, ",card:scene,concept:", s.concept, ",metaphor:", metaphorTag)
	card(1, stages.TabUsageComparison, formality,
		func(w *jsonWriter) {
			w.str("front", "A colleague asks you about ", s.concept, ". Would you answer with ", t, " or with ", s.vs,
				", and what would change in tone or meaning?")
		},
		func(x *text) {
			x.sentence("Use ", t, " when you mean ", s.gloss, ".")
			x.sentence("Example: ", example[0], example[1], " This asks the listener to talk about it, at a ", formality, " speech level.")
			x.sentence(s.vs, " is broader and vaguer; ", t, " is sharper and names exactly the ", s.concept, " you have in mind.")
			x.sentence("In speech, ", t, " sounds natural with friends and strangers alike; in writing it appears in news and essays as well.")
			x.sentence("Imagine saying both words at the ", s.location, ": ", s.vs, " drifts away like steam, while ", t, " lands with a solid thud on the ", s.anchor, ".")
			x.sentence("Feel ", s.sensory, " as the right word lands, and keep that contrast with you.")
			x.sentence("When in doubt, choose ", t, " for the precise sense and ", s.vs, " for the general one.")
		},
		"term:", t, ",pos:", s.pos, ",card:usage-comparison,concept:", s.concept, ",comparison_term:", s.vs)
	card(2, stages.TabHanja, "neutral",
		func(w *jsonWriter) {
			w.str("front", "Which Hanja characters, if any, stand behind ", t,
				", and which look-alike homonyms should you keep apart from it when reading?")
		},
		func(x *text) {
			x.sentence(termIPA, " is treated here as a word whose roots you learn through its homonyms.")
			x.sentence("Homonyms spelled ", t, " in Hangul carry Hanja such as ", hz.hanja, ", meaning ", hz.meaning, ", which appear mostly in formal writing.")
			x.sentence("Tell them apart by context: in everyday talk ", t, " almost always means ", s.gloss, ".")
			x.sentence("Picture the characters carved into the ", s.anchor, " at the ", s.location, ", rough under your fingertips and cold as stone.")
			x.sentence("Trace each stroke slowly, hear the brush scratch across the paper, and smell the ink as it dries.")
			x.sentence("Then link each character to a word you already know, so the family of words grows around one root.")
			x.sentence("Review the characters whenever you see them on signs or in headlines, and say their readings aloud.")
		},
		"term:", t, ",pos:", s.pos, ",card:hanja,hanja:", hz.hanja)
	return append(b, "]}"...), scratch
}
