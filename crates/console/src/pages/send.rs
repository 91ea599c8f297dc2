//! Nachricht senden: the choice of a kind (only the kinds this office's role sends, by the
//! node's policy), the form of a kind (the young person, the recipient — proposed from the
//! postal code by the directory's competence —, a consent select offering only the consents
//! that cover the message, by the node's own consent decision, and the kind's fields), its
//! submission through the node's Submission service with an idempotency key per rendered
//! form, a refusal explained in German at the top and at its field, and the sent message's
//! state ([`super::sent`]). The reply form ([`super::reply`]) is this form, prefilled.

use super::html;
use crate::app::Console;
use crate::refusal::{self, Explanation};
use crate::session::random_token;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_ledger::ConsentRefusal;
use kurzdraht_node::policy::{self, Role};
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1::{
    message_body::Body, Address, CertificationOutcome, CertificationRequest, DecisionOutcome,
    MessageBody, MessageKind, MoveOutCertification, MoveOutDecision, MoveOutGround,
    QualificationReferral, ReferralOutcome, ReferralResponse, Subject, SubmitRequest,
};
use serde::Deserialize;

/// The most consents the select offers (the newest first).
const MAX_OFFERED: usize = 50;

/// The case kinds, in the order the choice lists them.
const CASE_KINDS: [MessageKind; 5] = [
    MessageKind::CertificationRequest,
    MessageKind::MoveOutCertification,
    MessageKind::MoveOutDecision,
    MessageKind::QualificationReferral,
    MessageKind::ReferralResponse,
];

/// The form as submitted (every field text; the node validates).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SendForm {
    pub csrf: Option<String>,
    /// The idempotency key of this rendering of the form.
    pub schluessel: String,
    pub art: String,
    pub antwort_auf: String,
    /// `vorschlagen` (propose the competent office and show the covering consents) or
    /// `senden`.
    pub aktion: String,
    pub vorname: String,
    pub nachname: String,
    pub geburtsdatum: String,
    pub strasse: String,
    pub plz: String,
    pub ort: String,
    pub empfaenger: String,
    pub einwilligung: String,
    pub anlass: String,
    pub antwort_bis: String,
    pub ergebnis: String,
    pub grund: String,
    pub stellungnahme: String,
    pub gespraech_am: String,
    pub gesundheit: String,
    pub entschieden_am: String,
    pub mietvertrag_vom: String,
    pub massnahme: String,
    pub kontakt: String,
    pub hinweis: String,
}

/// One choice of a select.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// One input of the form.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its `name` and `id`.
    pub name: &'static str,
    pub label: &'static str,
    /// `text`, `date`, `textarea` or `select`.
    pub input: &'static str,
    pub value: String,
    pub choices: Vec<Choice>,
    pub required: bool,
    pub hint: &'static str,
    pub autocomplete: &'static str,
    /// The message next to the field when it is the cause of a refusal.
    pub error: Option<String>,
}

/// A fieldset of the form.
#[derive(Debug, Clone)]
pub struct Group {
    pub legend: &'static str,
    pub fields: Vec<Field>,
    /// The recipient's group carries the "Zuständige Stelle vorschlagen" button.
    pub propose: bool,
}

/// A refusal shown at the top of the form.
#[derive(Debug, Clone)]
pub struct Problem {
    pub title: &'static str,
    pub what: &'static str,
    pub next: &'static str,
    /// The field it concerns: (id, label).
    pub field: Option<(&'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "send.html")]
struct SendPage {
    frame: Frame,
    kinds: Vec<Choice>,
    kind: Option<FormView>,
}

/// The form of one kind.
pub struct FormView {
    pub slug: &'static str,
    pub label: &'static str,
    pub key: String,
    pub in_reply_to: String,
    pub caseworker: String,
    pub groups: Vec<Group>,
    pub problem: Option<Problem>,
    /// What the proposal found (or did not).
    pub proposal: Option<String>,
    pub no_consent: bool,
}

#[derive(Deserialize)]
pub struct NewQuery {
    art: Option<String>,
}

/// The role of this office.
fn own_role(console: &Console) -> Option<Role> {
    let directory = console.node.directory();
    directory.get(console.node.agency()).map(|a| a.role)
}

/// The kinds the office's role sends, by the policy's table, and each one's recipient role.
pub fn sendable(role: Role) -> Vec<(MessageKind, Role)> {
    CASE_KINDS
        .into_iter()
        .filter_map(|k| match policy::roles_for(k) {
            Some((from, to)) if from == role => Some((k, to)),
            _ => None,
        })
        .collect()
}

/// The kind of `slug`, if this office sends it, with the recipient's role.
fn kind_for(console: &Console, slug: &str) -> Result<(MessageKind, Role), ConsoleError> {
    let role = own_role(console).ok_or_else(|| ConsoleError::NotFound("own agency".into()))?;
    let kind = view::kind_of_slug(slug);
    sendable(role)
        .into_iter()
        .find(|(k, _)| Some(*k) == kind)
        .ok_or(ConsoleError::Form {
            field: "art",
            reason: "Diese Dienststelle sendet diese Nachrichtenart nicht".into(),
        })
}

/// `GET /nachricht/neu?art=`: the choice of a kind, or the empty form of one.
pub async fn new(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<NewQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Nachricht senden")?;
    let slug = q.art.unwrap_or_default();
    let form = SendForm {
        art: slug.clone(),
        ..Default::default()
    };
    if slug.is_empty() {
        return render(&console, &signed_in, None, StatusCode::OK);
    }
    let (kind, to) = kind_for(&console, &slug)?;
    let view = form_view(&console, &signed_in, kind, to, form, None, None)?;
    render(&console, &signed_in, Some(view), StatusCode::OK)
}

/// Renders the page (the kind choice, and the form when there is one).
pub fn render(
    console: &Console,
    signed_in: &SignedIn,
    kind: Option<FormView>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let role = own_role(console);
    let current = kind.as_ref().map(|k| k.slug).unwrap_or_default();
    let kinds = role
        .map(sendable)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| Choice {
            value: view::kind_slug(k).to_string(),
            label: view::kind_label(k as i32).to_string(),
            selected: view::kind_slug(k) == current,
        })
        .collect();
    let page = SendPage {
        frame: signed_in.frame(console, "/nachricht/neu"),
        kinds,
        kind,
    };
    Ok((status, html(page)?).into_response())
}

/// `POST /nachricht/neu`: propose the competent office (re-render), or send.
pub async fn submit(
    State(console): State<Console>,
    signed_in: SignedIn,
    Form(mut form): Form<SendForm>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Nachricht senden")?;
    signed_in.check_form(form.csrf.as_deref())?;
    let (kind, to) = kind_for(&console, &form.art)?;
    if form.aktion != "senden" {
        let proposal = propose(&console, to, &mut form);
        let view = form_view(&console, &signed_in, kind, to, form, None, Some(proposal))?;
        return render(&console, &signed_in, Some(view), StatusCode::OK);
    }
    let request = SubmitRequest {
        recipient: form.empfaenger.clone(),
        consent_id: form.einwilligung.clone(),
        in_reply_to: form.antwort_auf.clone(),
        body: Some(body_of(kind, &form, &signed_in.account.display_name)),
        idempotency_key: form.schluessel.clone(),
    };
    match console
        .node
        .submission()
        .submit(&signed_in.client(), request)
        .await
    {
        Ok(sent) => Ok(Redirect::to(&format!("/gesendet/{}", sent.message_id)).into_response()),
        Err(e) if refusal_status(&e).is_client_error() => {
            let problem = problem_of(&e, &form);
            let view = form_view(&console, &signed_in, kind, to, form, Some(problem), None)?;
            render(&console, &signed_in, Some(view), refusal_status(&e))
        }
        Err(e) => Err(e.into()),
    }
}

/// The status of a refusal the person can act on (422), or of the node's trouble.
fn refusal_status(e: &NodeError) -> StatusCode {
    match e.reason_code() {
        "store-failed" | "not-stored" | "store" | "store-locked" | "retry" | "internal" | "io"
        | "transport" | "config" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// Proposes the office of role `to` competent for the postal code (selects it in `form`);
/// the text says what was found.
fn propose(console: &Console, to: Role, form: &mut SendForm) -> String {
    let directory = console.node.directory();
    let plz = form.plz.trim();
    if plz.is_empty() {
        return "Geben Sie die Postleitzahl der jungen Person an, um die zuständige Stelle vorzuschlagen.".into();
    }
    match directory.competent(to, plz, "") {
        Some(a) => {
            form.empfaenger = a.id.clone();
            format!("Für die Postleitzahl {plz} ist zuständig: {}.", a.name)
        }
        None => format!(
            "Für die Postleitzahl {plz} ist im Verzeichnis keine Stelle eingetragen. Wählen Sie die Empfängerin selbst."
        ),
    }
}

fn text(s: &str) -> String {
    s.trim().to_string()
}

fn number(s: &str) -> i32 {
    s.trim().parse().unwrap_or(0)
}

/// The subject of the form.
fn subject_of(form: &SendForm) -> Subject {
    let address = match (form.strasse.trim(), form.plz.trim(), form.ort.trim()) {
        ("", "", "") => None,
        (street, postal_code, city) => Some(Address {
            street: street.into(),
            postal_code: postal_code.into(),
            city: city.into(),
        }),
    };
    Subject {
        given_name: text(&form.vorname),
        family_name: text(&form.nachname),
        date_of_birth: text(&form.geburtsdatum),
        address,
        case_references: vec![],
    }
}

/// The message body of `kind` the form describes; the caseworker is the signed-in account.
pub fn body_of(kind: MessageKind, form: &SendForm, caseworker: &str) -> MessageBody {
    let subject = Some(subject_of(form));
    let caseworker = caseworker.to_string();
    let body = match kind {
        MessageKind::CertificationRequest => Body::CertificationRequest(CertificationRequest {
            subject,
            reason: text(&form.anlass),
            respond_by: text(&form.antwort_bis),
            caseworker,
        }),
        MessageKind::MoveOutCertification => Body::MoveOutCertification(MoveOutCertification {
            subject,
            outcome: number(&form.ergebnis),
            ground: number(&form.grund),
            statement: text(&form.stellungnahme),
            interview_date: text(&form.gespraech_am),
            issuing_caseworker: caseworker,
            health_note: text(&form.gesundheit),
        }),
        MessageKind::MoveOutDecision => Body::MoveOutDecision(MoveOutDecision {
            subject,
            outcome: number(&form.ergebnis),
            ground: number(&form.grund),
            decision_date: text(&form.entschieden_am),
            tenancy_contract_date: text(&form.mietvertrag_vom),
            caseworker,
        }),
        MessageKind::QualificationReferral => Body::QualificationReferral(QualificationReferral {
            subject,
            reason: text(&form.anlass),
            measure: text(&form.massnahme),
            contact: text(&form.kontakt),
            respond_by: text(&form.antwort_bis),
        }),
        _ => Body::ReferralResponse(ReferralResponse {
            subject,
            outcome: number(&form.ergebnis),
            note: text(&form.hinweis),
            caseworker,
        }),
    };
    MessageBody { body: Some(body) }
}

/// The form field a field of the node's request names.
fn form_field(node_field: &str) -> Option<&'static str> {
    Some(match node_field {
        "body.subject.given_name" => "vorname",
        "body.subject.family_name" => "nachname",
        "body.subject.date_of_birth" => "geburtsdatum",
        "body.subject.address.street" => "strasse",
        "body.subject.address.postal_code" => "plz",
        "body.subject.address.city" => "ort",
        "body.reason" => "anlass",
        "body.respond_by" => "antwort_bis",
        "body.outcome" => "ergebnis",
        "body.ground" => "grund",
        "body.statement" => "stellungnahme",
        "body.interview_date" => "gespraech_am",
        "body.health_note" => "gesundheit",
        "body.decision_date" => "entschieden_am",
        "body.tenancy_contract_date" => "mietvertrag_vom",
        "body.measure" => "massnahme",
        "body.contact" => "kontakt",
        "body.note" => "hinweis",
        "recipient" => "empfaenger",
        "consent_id" => "einwilligung",
        _ => return None,
    })
}

/// The refusal, explained, and the field it concerns.
fn problem_of(e: &NodeError, form: &SendForm) -> Problem {
    let Explanation { title, what, next } = refusal::explain(e.reason_code());
    let field = match e {
        NodeError::Invalid { field, .. } | NodeError::OverAge { field, .. } => form_field(field),
        NodeError::Consent(ConsentRefusal::HealthNotExplicit) => Some("gesundheit"),
        NodeError::Consent(ConsentRefusal::CategoryNotCovered)
            if !form.gesundheit.trim().is_empty() =>
        {
            Some("gesundheit")
        }
        NodeError::Consent(_) => Some("einwilligung"),
        NodeError::PermissionDenied(_) => Some("empfaenger"),
        _ => None,
    };
    Problem {
        title,
        what,
        next,
        field: field.map(|f| (f, label_of(f))),
    }
}

/// The German label of a form field.
fn label_of(name: &str) -> &'static str {
    match name {
        "vorname" => "Vorname",
        "nachname" => "Nachname",
        "geburtsdatum" => "Geburtsdatum",
        "strasse" => "Straße und Hausnummer",
        "plz" => "Postleitzahl",
        "ort" => "Ort",
        "empfaenger" => "Empfängerin",
        "einwilligung" => "Einwilligung",
        "anlass" => "Anlass",
        "antwort_bis" => "Antwort erbeten bis",
        "ergebnis" => "Ergebnis",
        "grund" => "Grund nach § 22 Abs. 5 SGB II",
        "stellungnahme" => "Stellungnahme",
        "gespraech_am" => "Gespräch mit der jungen Person am",
        "gesundheit" => "Hinweis zur Gesundheit",
        "entschieden_am" => "Entschieden am",
        "mietvertrag_vom" => "Mietvertrag vom",
        "massnahme" => "Maßnahme",
        "kontakt" => "Kontakt",
        "hinweis" => "Hinweis",
        _ => "Feld",
    }
}

fn field(name: &'static str, input: &'static str, value: &str, required: bool) -> Field {
    Field {
        name,
        label: label_of(name),
        input,
        value: value.to_string(),
        choices: vec![],
        required,
        hint: "",
        autocomplete: "off",
        error: None,
    }
}

fn hinted(mut f: Field, hint: &'static str) -> Field {
    f.hint = hint;
    f
}

fn select(name: &'static str, value: &str, required: bool, options: &[(i32, &str)]) -> Field {
    let mut f = field(name, "select", value, required);
    f.choices = std::iter::once((0, "Bitte wählen"))
        .chain(options.iter().copied())
        .map(|(v, label)| Choice {
            value: if v == 0 { String::new() } else { v.to_string() },
            label: label.to_string(),
            selected: value.trim() == v.to_string(),
        })
        .collect();
    f
}

fn grounds(value: &str, required: bool) -> Field {
    select(
        "grund",
        value,
        required,
        &[
            (
                MoveOutGround::SeriousSocialReasons as i32,
                "Nr. 1: schwerwiegende soziale Gründe",
            ),
            (
                MoveOutGround::LabourMarketIntegration as i32,
                "Nr. 2: Eingliederung in den Arbeitsmarkt",
            ),
            (
                MoveOutGround::OtherSeriousReason as i32,
                "Nr. 3: ein ähnlich schwerwiegender Grund",
            ),
        ],
    )
}

/// The kind's own fields.
fn kind_fields(kind: MessageKind, f: &SendForm) -> Vec<Field> {
    match kind {
        MessageKind::CertificationRequest => vec![
            hinted(
                field("anlass", "textarea", &f.anlass, true),
                "Warum fragt das Jobcenter an? Keine vertraulichen Einzelheiten.",
            ),
            field("antwort_bis", "date", &f.antwort_bis, false),
        ],
        MessageKind::MoveOutCertification => vec![
            select(
                "ergebnis",
                &f.ergebnis,
                true,
                &[
                    (CertificationOutcome::Supported as i32, "Auszug befürwortet"),
                    (
                        CertificationOutcome::NotSupported as i32,
                        "Auszug nicht befürwortet",
                    ),
                    (
                        CertificationOutcome::NotCompetentForwarded as i32,
                        "Nicht zuständig, weitergeleitet",
                    ),
                ],
            ),
            hinted(
                grounds(&f.grund, false),
                "Pflicht, wenn der Auszug befürwortet wird.",
            ),
            hinted(
                field("stellungnahme", "textarea", &f.stellungnahme, true),
                "Kurz und ohne vertrauliche Einzelheiten (§ 65 SGB VIII).",
            ),
            field("gespraech_am", "date", &f.gespraech_am, true),
            hinted(
                field("gesundheit", "textarea", &f.gesundheit, false),
                "Nur mit einer ausdrücklichen Einwilligung, die Gesundheitsdaten umfasst (Art. 9 DSGVO). Sonst leer lassen.",
            ),
        ],
        MessageKind::MoveOutDecision => vec![
            select(
                "ergebnis",
                &f.ergebnis,
                true,
                &[
                    (DecisionOutcome::AssuranceGranted as i32, "Zusicherung erteilt"),
                    (
                        DecisionOutcome::AssuranceRefused as i32,
                        "Zusicherung abgelehnt",
                    ),
                    (
                        DecisionOutcome::AssuranceWaived as i32,
                        "Zusicherung nicht erforderlich",
                    ),
                ],
            ),
            grounds(&f.grund, false),
            field("entschieden_am", "date", &f.entschieden_am, true),
            field("mietvertrag_vom", "date", &f.mietvertrag_vom, false),
        ],
        MessageKind::QualificationReferral => vec![
            field("anlass", "textarea", &f.anlass, true),
            hinted(
                field("massnahme", "text", &f.massnahme, true),
                "Zum Beispiel „Berufsvorbereitung“ oder „Aktivierungshilfe“.",
            ),
            hinted(
                field("kontakt", "text", &f.kontakt, true),
                "Wen das Jugendamt ansprechen soll (Name, Telefon, E-Mail).",
            ),
            field("antwort_bis", "date", &f.antwort_bis, false),
        ],
        _ => vec![
            select(
                "ergebnis",
                &f.ergebnis,
                true,
                &[
                    (ReferralOutcome::Accepted as i32, "Angenommen"),
                    (ReferralOutcome::Declined as i32, "Abgelehnt"),
                    (ReferralOutcome::InProgress as i32, "In Bearbeitung"),
                    (ReferralOutcome::Finished as i32, "Abgeschlossen"),
                ],
            ),
            field("hinweis", "textarea", &f.hinweis, false),
        ],
    }
}

/// The consent select: the consents that cover the message the form describes now (by the
/// node's consent decision); on a refusal, the chosen one stays chosen and says it does not.
fn consent_field(
    console: &Console,
    kind: MessageKind,
    form: &SendForm,
    caseworker: &str,
) -> Result<Field, ConsoleError> {
    let body = body_of(kind, form, caseworker);
    let covering = match form.empfaenger.is_empty() {
        true => vec![],
        false => {
            console
                .node
                .submission()
                .covering_consents(&form.empfaenger, &body, MAX_OFFERED)?
        }
    };
    let mut f = field("einwilligung", "select", &form.einwilligung, true);
    f.hint = "Angeboten werden nur Einwilligungen, die diese Nachricht abdecken: diese Person, diese Empfängerin, der Zweck der Nachricht und die Datenarten der ausgefüllten Felder. Nach Änderungen: „Zuständige Stelle vorschlagen“ aktualisiert die Auswahl.";
    f.choices.push(Choice {
        value: String::new(),
        label: "Bitte wählen".into(),
        selected: form.einwilligung.is_empty(),
    });
    for c in &covering {
        f.choices.push(Choice {
            selected: c.consent_id == form.einwilligung,
            label: format!(
                "Erfasst am {} von {}, gültig bis {} ({})",
                view::german_datetime(c.recorded_at_ms),
                c.recorded_by,
                view::german_datetime(c.valid_until_ms),
                c.consent_id
            ),
            value: c.consent_id.clone(),
        });
    }
    if !form.einwilligung.is_empty() && !covering.iter().any(|c| c.consent_id == form.einwilligung)
    {
        f.choices.push(Choice {
            value: form.einwilligung.clone(),
            label: format!("{} – deckt diese Nachricht nicht ab", form.einwilligung),
            selected: true,
        });
    }
    Ok(f)
}

/// The model of the form of `kind` with `form`'s values, `problem` marked at its field.
pub fn form_view(
    console: &Console,
    signed_in: &SignedIn,
    kind: MessageKind,
    to: Role,
    mut form: SendForm,
    problem: Option<Problem>,
    proposal: Option<String>,
) -> Result<FormView, ConsoleError> {
    if form.schluessel.is_empty() {
        form.schluessel = random_token();
    }
    let caseworker = signed_in.account.display_name.clone();
    let directory = console.node.directory();
    let own = console.node.agency().to_string();
    let mut recipient = field("empfaenger", "select", &form.empfaenger, true);
    recipient.choices.push(Choice {
        value: String::new(),
        label: "Bitte wählen".into(),
        selected: form.empfaenger.is_empty(),
    });
    for a in directory.agencies().filter(|a| a.role == to && a.id != own) {
        recipient.choices.push(Choice {
            value: a.id.clone(),
            label: a.name.clone(),
            selected: a.id == form.empfaenger,
        });
    }
    let consent = consent_field(console, kind, &form, &caseworker)?;
    let no_consent = consent.choices.len() == 1;
    let mut person = vec![
        field("vorname", "text", &form.vorname, true),
        field("nachname", "text", &form.nachname, true),
        hinted(
            field("geburtsdatum", "date", &form.geburtsdatum, true),
            "Die Person muss am Tag der Nachricht unter 25 Jahre alt sein.",
        ),
        field("strasse", "text", &form.strasse, false),
        field("plz", "text", &form.plz, false),
        field("ort", "text", &form.ort, false),
    ];
    person[0].autocomplete = "off";
    let mut groups = vec![
        Group {
            legend: "Junge Person",
            fields: person,
            propose: false,
        },
        Group {
            legend: "Empfängerin",
            fields: vec![recipient],
            propose: true,
        },
        Group {
            legend: "Einwilligung",
            fields: vec![consent],
            propose: false,
        },
        Group {
            legend: "Inhalt",
            fields: kind_fields(kind, &form),
            propose: false,
        },
    ];
    if let Some(Problem {
        field: Some((name, _)),
        next,
        ..
    }) = &problem
    {
        for f in groups.iter_mut().flat_map(|g| g.fields.iter_mut()) {
            if f.name == *name {
                f.error = Some(match *name {
                    "gesundheit" => format!(
                        "Leeren Sie das Feld „{}“ oder erfassen Sie eine neue Einwilligung, die Gesundheitsdaten ausdrücklich umfasst.",
                        f.label
                    ),
                    _ => next.to_string(),
                });
            }
        }
    }
    Ok(FormView {
        slug: view::kind_slug(kind),
        label: view::kind_label(kind as i32),
        key: form.schluessel.clone(),
        in_reply_to: form.antwort_auf.clone(),
        caseworker,
        groups,
        problem,
        proposal,
        no_consent,
    })
}
