//! What a refusal means, in German, for the person who met it: every reason code the node
//! gives (`kurzdraht-reason`, the same codes the AgencyApi and the audit chain use) has a
//! title, what happened in plain language, and what to do next.

/// A refusal, explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation {
    pub title: &'static str,
    pub what: &'static str,
    pub next: &'static str,
}

const fn x(title: &'static str, what: &'static str, next: &'static str) -> Explanation {
    Explanation { title, what, next }
}

/// The explanation of `reason` (a code of `NodeError::reason_code`).
pub fn explain(reason: &str) -> Explanation {
    match reason {
        "no-consent" => x(
            "Keine Einwilligung",
            "Für diese Nachricht liegt keine Einwilligung der jungen Person vor. Ohne Einwilligung dürfen keine Daten übermittelt werden.",
            "Erfassen Sie zuerst die Einwilligung (Seite „Einwilligung erfassen“) und wählen Sie sie dann beim Senden aus.",
        ),
        "consent-withdrawn" => x(
            "Einwilligung widerrufen",
            "Die junge Person hat ihre Einwilligung widerrufen. Seitdem dürfen keine Daten mehr übermittelt werden.",
            "Senden Sie nichts mehr auf dieser Grundlage. Nur mit einer neuen Einwilligung der Person geht es weiter.",
        ),
        "consent-superseded" => x(
            "Einwilligung ersetzt",
            "Diese Einwilligung wurde durch eine neuere ersetzt.",
            "Wählen Sie die neuere Einwilligung aus.",
        ),
        "consent-erased" => x(
            "Daten gelöscht",
            "Die Daten der Person zu dieser Einwilligung wurden gelöscht (Art. 17 DSGVO).",
            "Ohne neue Einwilligung ist keine Übermittlung möglich.",
        ),
        "consent-expired" => x(
            "Einwilligung abgelaufen",
            "Die Einwilligung gilt nicht mehr: ihr Gültigkeitszeitraum ist vorbei.",
            "Holen Sie eine neue Einwilligung ein und erfassen Sie sie („Einwilligung ersetzen“).",
        ),
        "consent-not-yet-valid" => x(
            "Einwilligung noch nicht gültig",
            "Die Einwilligung gilt erst ab einem späteren Datum.",
            "Senden Sie ab dem Beginn der Gültigkeit oder korrigieren Sie das Datum mit einer neuen Einwilligung.",
        ),
        "consent-other-subject" => x(
            "Einwilligung einer anderen Person",
            "Die gewählte Einwilligung gehört zu einer anderen Person als die Nachricht.",
            "Prüfen Sie Name und Geburtsdatum und wählen Sie die Einwilligung dieser Person.",
        ),
        "consent-other-recipient" => x(
            "Empfänger nicht abgedeckt",
            "Die Einwilligung nennt diese Dienststelle nicht als Empfängerin.",
            "Wählen Sie eine Einwilligung, die diese Dienststelle nennt, oder erfassen Sie eine neue.",
        ),
        "consent-other-sender" => x(
            "Absender nicht abgedeckt",
            "Die Einwilligung erlaubt keine Übermittlung von Ihrer Dienststelle.",
            "Erfassen Sie eine Einwilligung, die Ihre Dienststelle umfasst.",
        ),
        "consent-not-with-controller" => x(
            "Übermittlung zwischen Dritten",
            "Eine Einwilligung erlaubt den Austausch mit der Dienststelle, die sie erfasst hat – nicht zwischen den anderen genannten Dienststellen.",
            "Die Dienststelle, die die Einwilligung erfasst hat, muss die Nachricht senden, oder Sie erfassen eine eigene Einwilligung.",
        ),
        "consent-other-purpose" => x(
            "Zweck nicht abgedeckt",
            "Die Einwilligung umfasst den Zweck dieser Nachricht nicht.",
            "Wählen Sie eine Einwilligung für diesen Zweck oder erfassen Sie eine neue.",
        ),
        "consent-category-not-covered" => x(
            "Datenart nicht abgedeckt",
            "Die Nachricht enthält Daten einer Art, die die Einwilligung nicht umfasst.",
            "Leeren Sie das betreffende Feld oder erfassen Sie eine neue Einwilligung, die diese Datenart umfasst.",
        ),
        "consent-health-not-explicit" => x(
            "Gesundheitsdaten ohne ausdrückliche Einwilligung",
            "Gesundheitsdaten dürfen nur mit einer ausdrücklichen Einwilligung nach Art. 9 Abs. 2 lit. a DSGVO übermittelt werden.",
            "Leeren Sie das Feld mit dem Gesundheitshinweis oder erfassen Sie eine ausdrückliche Einwilligung.",
        ),
        "consent-exists" => x(
            "Einwilligung schon erfasst",
            "Eine Einwilligung mit dieser Kennung ist bereits erfasst.",
            "Öffnen Sie die vorhandene Einwilligung; ändern Sie sie über „Einwilligung ersetzen“.",
        ),
        "not-recording-agency" => x(
            "Fremde Einwilligung",
            "Diese Einwilligung hat eine andere Dienststelle erfasst; nur sie kann sie widerrufen oder ersetzen.",
            "Wenden Sie sich an die Dienststelle, die die Einwilligung erfasst hat.",
        ),
        "invalid-argument" => x(
            "Eingabe unvollständig oder fehlerhaft",
            "Mindestens ein Feld ist leer, zu lang oder hat ein ungültiges Format.",
            "Korrigieren Sie die markierten Felder und senden Sie das Formular erneut.",
        ),
        "over-age" => x(
            "Nicht unter 25",
            "Die Regelung gilt nur für Personen unter 25 Jahren; nach dem Geburtsdatum ist die Person älter.",
            "Prüfen Sie das Geburtsdatum.",
        ),
        "permission-denied" => x(
            "Nicht erlaubt",
            "Diese Dienststelle darf diese Nachricht nicht an diese Empfängerin senden.",
            "Prüfen Sie die Empfängerin; Anfragen zum Auszug gehen vom Jobcenter an das zuständige Jugendamt.",
        ),
        "unauthenticated" => x(
            "Nicht angemeldet",
            "Die Anmeldung ist nicht gültig.",
            "Melden Sie sich erneut an.",
        ),
        "account-locked" => x(
            "Konto vorübergehend gesperrt",
            "Nach mehreren falschen Passwörtern ist das Konto für einige Minuten gesperrt.",
            "Warten Sie und versuchen Sie es dann erneut, oder wenden Sie sich an die Administration.",
        ),
        "not-found" => x(
            "Nicht gefunden",
            "Der Eintrag existiert hier nicht (mehr).",
            "Prüfen Sie die Auswahl oder gehen Sie zurück zur Übersicht.",
        ),
        "idempotency-key-reused" | "message-id-conflict" => x(
            "Bereits gesendet",
            "Diese Nachricht wurde schon einmal mit anderem Inhalt gesendet.",
            "Laden Sie das Formular neu und senden Sie erneut.",
        ),
        "rate-limited" | "retry" | "store-failed" | "not-stored" | "store-locked" | "store" => x(
            "Vorübergehend nicht möglich",
            "Der Knoten Ihrer Dienststelle konnte die Aktion gerade nicht speichern. Es wurde nichts übermittelt.",
            "Versuchen Sie es in einer Minute erneut. Bleibt der Fehler, melden Sie ihn der Administration.",
        ),
        "too-large" => x(
            "Zu groß",
            "Die Eingabe ist größer als erlaubt.",
            "Kürzen Sie die Texte und senden Sie erneut.",
        ),
        "certificate-revoked" | "bad-signature" | "sender-mismatch" | "payload-hash-mismatch"
        | "kind-mismatch" | "receipt-mismatch" | "malformed" => x(
            "Nachricht nicht vertrauenswürdig",
            "Eine Nachricht trug keine gültige Signatur der absendenden Dienststelle und wurde abgewiesen.",
            "Melden Sie das der Administration Ihrer Dienststelle.",
        ),
        "clock-skew" => x(
            "Uhrzeit abweichend",
            "Die Uhren der beteiligten Knoten weichen zu weit voneinander ab.",
            "Melden Sie das der Administration; die Nachricht wird später zugestellt.",
        ),
        _ => x(
            "Technischer Fehler",
            "Die Aktion konnte wegen eines technischen Fehlers nicht ausgeführt werden. Es wurde nichts übermittelt.",
            "Melden Sie den Fehler der Administration Ihrer Dienststelle.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurzdraht_ledger::ConsentRefusal as R;

    /// Every consent refusal, by an exhaustive match: a new refusal fails to compile here
    /// until it is listed (and then explained).
    fn every_consent_refusal() -> Vec<R> {
        let all = [
            R::NoConsent,
            R::Withdrawn,
            R::Superseded,
            R::Erased,
            R::Expired,
            R::NotYetValid,
            R::OtherSubject,
            R::OtherRecipient,
            R::OtherSender,
            R::NotWithController,
            R::OtherPurpose,
            R::CategoryNotCovered,
            R::HealthNotExplicit,
        ];
        for r in all {
            match r {
                R::NoConsent
                | R::Withdrawn
                | R::Superseded
                | R::Erased
                | R::Expired
                | R::NotYetValid
                | R::OtherSubject
                | R::OtherRecipient
                | R::OtherSender
                | R::NotWithController
                | R::OtherPurpose
                | R::CategoryNotCovered
                | R::HealthNotExplicit => {}
            }
        }
        all.to_vec()
    }

    #[test]
    fn every_consent_refusal_has_its_own_explanation() {
        let fallback = explain("no-such-code");
        let mut seen = std::collections::BTreeSet::new();
        for r in every_consent_refusal() {
            let e = explain(r.code());
            assert_ne!(e, fallback, "{} is not explained", r.code());
            assert!(seen.insert(e.title), "{} shares a title", r.code());
            assert!(!e.what.is_empty() && !e.next.is_empty());
        }
    }

    #[test]
    fn the_codes_a_person_can_act_on_are_explained() {
        let fallback = explain("no-such-code");
        for code in [
            "invalid-argument",
            "over-age",
            "permission-denied",
            "not-recording-agency",
            "consent-exists",
            "not-found",
            "rate-limited",
            "too-large",
            "unauthenticated",
            "account-locked",
            "store-failed",
            "idempotency-key-reused",
        ] {
            assert_ne!(explain(code), fallback, "{code}");
        }
        assert_eq!(explain("internal").title, "Technischer Fehler");
    }

    #[test]
    fn the_category_refusal_names_the_way_out() {
        let e = explain("consent-category-not-covered");
        assert!(e.next.contains("Leeren Sie das betreffende Feld"));
        assert!(e.next.contains("neue Einwilligung"));
    }
}
