package intake_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// FuzzFusionAuthWebhook feeds arbitrary bodies, correctly signed, to the
// FusionAuth receiver: no panic, never a 5xx with a healthy store, and a
// rejected body leaves the store file byte-for-byte unchanged.
//
//	go test -run '^$' -fuzz FuzzFusionAuthWebhook -fuzztime 30s ./extauthz/intake
func FuzzFusionAuthWebhook(f *testing.F) {
	now := time.Now().UnixMilli()
	for _, seed := range [][]byte{
		event("user.delete", "s1", now, userJSON()),
		event("jwt.refresh-token.revoke", "s2", now, `"applicationId":"`+appID+`","userId":"`+userID+`","refreshToken":{"id":"`+rtID+`"},"applicationTimeToLiveInSeconds":{"`+appID+`":-5}`),
		event("jwt.refresh-token.revoke", "s3", now, `"applicationTimeToLiveInSeconds":{"a":9223372036854775807}`),
		event("user.registration.delete", "s4", now, `"registration":{"applicationId":7}`),
		[]byte(`{"event":{"id":"x","type":"user.delete","createInstant":-1,"user":{"id":""}}}`),
		[]byte(`{"event":null}`), []byte(`null`), []byte(`{"event":{"createInstant":1e400}}`),
	} {
		f.Add(seed)
	}
	e := newFAEnv(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		before, _ := os.ReadFile(e.dbPath)
		req := httptest.NewRequest("POST", "/webhooks/fusionauth", bytes.NewReader(body))
		req.Header.Set("X-FusionAuth-Signature-JWT", sign(t, body, webhookSecret))
		req.SetBasicAuth("fusionauth", "basic-password-123")
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code != http.StatusOK {
			if after, _ := os.ReadFile(e.dbPath); !bytes.Equal(before, after) {
				t.Fatalf("a rejected body (%d) changed the store", rec.Code)
			}
		}
	})
}
