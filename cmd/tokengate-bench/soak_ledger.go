package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The soak mode's accounting: what each Check answer should have been, given
// what the revoker had done by the time the Check was sent.

// checkClass is what a Check asked about, judged from the revoker's record.
type checkClass int

const (
	// classValid: a pool token no revocation had been sent for; it must be
	// allowed (or denied token_revoked if one was sent meanwhile).
	classValid checkClass = iota
	// classRevoking: a pool token whose revocation was sent, but which the
	// replica asked need not enforce yet: the POST had not returned 2xx
	// before the Check was sent, or it returned on the other replica less
	// than the propagation bound before. Allowed or token_revoked are both
	// right.
	classRevoking
	// classRevoked: a pool token the replica asked must deny as
	// token_revoked; an allow is a violation.
	classRevoked
	// The junk classes: each must be denied with its own reason.
	classMalformed
	classWrongSignature
	classUnknownKid
	classExpired
	numClasses
)

var classNames = [numClasses]string{"valid", "revoking", "revoked", "malformed", "wrong_signature", "unknown_kid", "expired"}

func (c checkClass) String() string { return classNames[c] }

// junkReasons is the denial each junk class must get.
var junkReasons = map[checkClass]string{
	classMalformed:      "token_malformed",
	classWrongSignature: "token_invalid_signature",
	classUnknownKid:     "key_unknown",
	classExpired:        "token_expired",
}

// poolToken is one distinct valid token of the pool and what the revoker did
// to it. The revoker stores sent before its POST, then ackedBy, then acked
// once the POST returned 2xx; readers load in the opposite order.
type poolToken struct {
	raw, jti, sub, sid string
	exp                time.Time
	kind               int // how the revoker revokes it: an index of revocationKinds

	sent    atomic.Int64 // unix ns just before the POST; 0: never
	ackedBy atomic.Int32 // the replica whose admin API answered 2xx
	acked   atomic.Int64 // unix ns once the 2xx was read; 0: not (yet)
}

// markSent and markAcked are the revoker's records.
func (p *poolToken) markSent(at time.Time) { p.sent.Store(at.UnixNano()) }
func (p *poolToken) markAcked(via int, at time.Time) {
	p.ackedBy.Store(int32(via))
	p.acked.Store(at.UnixNano())
}

// outcome is how one answer compares with what it should have been.
type outcome int

const (
	outcomeOK outcome = iota
	// outcomeViolation: an allow of a token that had to be denied: a revoked
	// token past its deadline, or junk.
	outcomeViolation
	// outcomeWrong: a denial with the wrong reason (a valid token denied as
	// anything, a revoked one denied as something other than
	// token_revoked, junk denied for the wrong reason).
	outcomeWrong
)

// judgePool classifies and judges one answer about a pool token, given to
// replica `on`, sent at start. It reads the revoker's record after the
// answer: an ack that happened before start is seen then.
//
// A revocation must be enforced by the replica that acknowledged it from its
// 2xx on (read-your-writes), and by every other replica from bound after it.
func judgePool(p *poolToken, on int, start time.Time, decision string, bound time.Duration) (checkClass, outcome) {
	acked, sent := p.acked.Load(), p.sent.Load()
	class := classValid
	switch {
	case acked != 0 && enforceable(time.Unix(0, acked), int(p.ackedBy.Load()) == on, start, bound):
		class = classRevoked
	case sent != 0:
		class = classRevoking
	}
	switch {
	case decision == reasonAllowed && class == classRevoked:
		return class, outcomeViolation
	case decision == reasonAllowed:
		return class, outcomeOK
	case decision == reasonRevoked && sent != 0:
		return class, outcomeOK
	default: // denied with no revocation sent, or for another reason
		return class, outcomeWrong
	}
}

// enforceable says whether a Check sent at start had to see a revocation
// acknowledged at ack: on the acknowledging replica (self) from the ack on,
// elsewhere from bound after it.
func enforceable(ack time.Time, self bool, start time.Time, bound time.Duration) bool {
	if self {
		return start.After(ack)
	}
	return start.After(ack.Add(bound))
}

// judgeJunk judges one answer about a junk token of class c.
func judgeJunk(c checkClass, decision string) outcome {
	switch decision {
	case junkReasons[c]:
		return outcomeOK
	case reasonAllowed:
		return outcomeViolation
	default:
		return outcomeWrong
	}
}

// tally counts one goroutine's answers; tallies are merged at the end.
type tally struct {
	checks     [numClasses]int64
	violations [numClasses]int64
	wrong      [numClasses]int64
	grpcErrors int64
}

func (t *tally) add(c checkClass, o outcome) {
	t.checks[c]++
	switch o {
	case outcomeViolation:
		t.violations[c]++
	case outcomeWrong:
		t.wrong[c]++
	}
}

func (t *tally) merge(o *tally) {
	for c := range numClasses {
		t.checks[c] += o.checks[c]
		t.violations[c] += o.violations[c]
		t.wrong[c] += o.wrong[c]
	}
	t.grpcErrors += o.grpcErrors
}

func (t *tally) totals() (checks, violations, wrong int64) {
	for c := range numClasses {
		checks += t.checks[c]
		violations += t.violations[c]
		wrong += t.wrong[c]
	}
	return checks, violations, wrong
}

// maxExamples bounds the failures the report describes one by one.
const maxExamples = 10

// examples keeps the first few failures, described without the token.
type examples struct {
	mu   sync.Mutex
	list []string
	more int
}

func (e *examples) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.list) < maxExamples {
		e.list = append(e.list, fmt.Sprintf(format, args...))
		return
	}
	e.more++
}

func (e *examples) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]string(nil), e.list...)
	if e.more > 0 {
		out = append(out, fmt.Sprintf("… and %d more", e.more))
	}
	return out
}
