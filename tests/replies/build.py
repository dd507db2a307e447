# ruff: noqa: E501  (each reply and client header on one line, as written)
"""Writes the labelled reply corpus (tests/replies/NNN.eml + labels.jsonl) from the customer
texts in bodies_*.py, each wrapped as a mail client wraps a reply: quoted reminder under an
"On ... wrote:" line in the reply's language, an Outlook header block, "-----Original
Message-----", a phone footer, or nothing; a signature; sometimes a disclaimer.

Run once by hand (``python -m tests.replies.build``); the .eml files are what the tests and
the bench read. The split is fixed here, before any tuning: odd file numbers are the dev
half, even numbers the held-out half.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from tests.replies import bodies_en, bodies_es, bodies_fr, bodies_ro

HERE = Path(__file__).parent
EARLY = datetime(2026, 1, 12, 10, 5, tzinfo=timezone(timedelta(hours=1)))  # Monday
LATE = datetime(2026, 1, 29, 16, 40, tzinfo=timezone(timedelta(hours=1)))  # Thursday

WRAPS = {
    "en": {
        "wrote": "On {d:%a}, {d:%d} {d:%b} {d:%Y} at 09:14, Acme Accounts <ar@acme.example> wrote:",
        "outlook": "From: Acme Accounts <ar@acme.example>\nSent: {d:%A}, {d:%B} {d:%d}, {d:%Y} 9:14 AM\n"
        "To: {who} <{addr}>\nSubject: Reminder: invoice INV-1042 is overdue",
        "original": "-----Original Message-----\nFrom: Acme Accounts [mailto:ar@acme.example]\n"
        "Sent: {d:%d} {d:%B} {d:%Y} 09:14\nTo: {addr}\nSubject: Reminder: invoice INV-1042 is overdue",
        "reminder": "Dear customer,\n\nOur records show that invoice INV-1042 for EUR 1,250.00, due on\n"
        "31 December 2025, is still unpaid. Please pay it at your earliest convenience.\n\n"
        "If you have already paid, please ignore this message. If you believe this invoice\n"
        "is wrong, reply to this email and we will look into it.\n\nAcme Ltd - Accounts Receivable",
        "phone": "Sent from my iPhone",
        "disclaimer": "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and may\n"
        "be privileged. If you are not the intended recipient or have received this e-mail in\n"
        "error, please notify the sender immediately and delete it. We have not paid any\n"
        "attention to viruses; scanning is your responsibility.",
    },
    "es": {
        "wrote": "El lun, {d:%d} ene {d:%Y} a las 9:14, Acme Contabilidad (<ar@acme.example>) escribió:",
        "outlook": "De: Acme Contabilidad <ar@acme.example>\nEnviado: lunes, {d:%d} de enero de {d:%Y} 9:14\n"
        "Para: {who} <{addr}>\nAsunto: Recordatorio: factura INV-1042 vencida",
        "original": "-----Mensaje original-----\nDe: Acme Contabilidad [mailto:ar@acme.example]\n"
        "Enviado el: lunes, {d:%d} de enero de {d:%Y} 9:14\nPara: {addr}\nAsunto: Recordatorio: factura INV-1042",
        "reminder": "Estimado cliente:\n\nLa factura INV-1042 por 1.250,00 EUR, con vencimiento el 31 de\n"
        "diciembre de 2025, sigue pendiente de pago. Le rogamos que la abone lo antes posible.\n\n"
        "Si ya ha pagado, ignore este mensaje. Si cree que la factura es incorrecta, responda\n"
        "a este correo.\n\nAcme S.L. - Cobros",
        "phone": "Enviado desde mi iPhone",
        "disclaimer": "AVISO LEGAL: Este mensaje y sus anexos son confidenciales. Si usted no es el\n"
        "destinatario o lo ha recibido por error, comuníquelo al remitente y bórrelo. No hemos\n"
        "pagado ningún tributo por su lectura.",
    },
    "fr": {
        "wrote": "Le lun. {d:%d} janv. {d:%Y} à 09:14, Acme Comptabilité <ar@acme.example> a écrit :",
        "outlook": "De : Acme Comptabilité <ar@acme.example>\nEnvoyé : lundi {d:%d} janvier {d:%Y} 09:14\n"
        "À : {who} <{addr}>\nObjet : Relance : facture INV-1042 échue",
        "original": "-----Original Message-----\nDe : Acme Comptabilité [mailto:ar@acme.example]\n"
        "Envoyé : lundi {d:%d} janvier {d:%Y} 09:14\nÀ : {addr}\nObjet : Relance : facture INV-1042",
        "reminder": "Madame, Monsieur,\n\nSauf erreur de notre part, la facture INV-1042 de 1 250,00 EUR,\n"
        "échue le 31 décembre 2025, reste impayée. Merci de procéder à son règlement.\n\n"
        "Si vous avez déjà réglé, merci de ne pas tenir compte de ce message. Si la facture\n"
        "vous semble erronée, répondez à ce courriel.\n\nAcme SAS - Recouvrement",
        "phone": "Envoyé de mon iPhone",
        "disclaimer": "Ce message et ses pièces jointes sont confidentiels. Si vous n'êtes pas le\n"
        "destinataire ou si vous l'avez reçu par erreur, merci d'en avertir l'expéditeur et de\n"
        "le supprimer. Pensez à l'environnement avant d'imprimer ce mail.",
    },
    "ro": {
        "wrote": "În lun., {d:%d} ian. {d:%Y} la 09:14, Acme Contabilitate <ar@acme.example> a scris:",
        "outlook": "De la: Acme Contabilitate <ar@acme.example>\nTrimis: luni, {d:%d} ianuarie {d:%Y} 09:14\n"
        "Către: {who} <{addr}>\nSubiect: Reamintire: factura INV-1042 scadentă",
        "original": "-----Original Message-----\nDe la: Acme Contabilitate [mailto:ar@acme.example]\n"
        "Trimis: luni, {d:%d} ianuarie {d:%Y} 09:14\nCătre: {addr}\nSubiect: Reamintire: factura INV-1042",
        "reminder": "Stimate client,\n\nFactura INV-1042 în valoare de 1.250,00 EUR, scadentă la 31\n"
        "decembrie 2025, nu a fost încă achitată. Vă rugăm să efectuați plata cât mai curând.\n\n"
        "Dacă ați plătit deja, ignorați acest mesaj. Dacă factura vi se pare greșită,\n"
        "răspundeți la acest e-mail.\n\nAcme SRL - Departamentul Încasări",
        "phone": "Trimis de pe iPhone",
        "disclaimer": "Acest mesaj este confidențial. Dacă l-ați primit din greșeală, vă rugăm să\n"
        "anunțați expeditorul și să îl ștergeți.",
    },
}


def wrap(
    lang: str, n: int, body: str, signature: str, written: datetime, who: str, addr: str
) -> str:
    w = WRAPS[lang]
    style = n % 6
    reminder = w["reminder"]
    text = body.strip("\n") + "\n\n" + signature.strip("\n") + "\n"
    if style == 4:
        text += "\n" + w["disclaimer"] + "\n"
    if style in (0, 4):
        quoted = "\n".join("> " + line if line else ">" for line in reminder.splitlines())
        return text + "\n" + w["wrote"].format(d=written - timedelta(days=2)) + "\n" + quoted + "\n"
    if style == 1:
        head = w["outlook"].format(d=written - timedelta(days=2), who=who, addr=addr)
        return text + "\n________________________________\n" + head + "\n\n" + reminder + "\n"
    if style == 2:
        head = w["original"].format(d=written - timedelta(days=2), addr=addr)
        return text + "\n" + head + "\n\n" + reminder + "\n"
    if style == 3:
        quoted = "\n".join("> " + line if line else ">" for line in reminder.splitlines())
        return (
            body.strip("\n")
            + "\n\n"
            + w["phone"]
            + "\n\n"
            + w["wrote"].format(d=written - timedelta(days=2))
            + "\n\n"
            + quoted
            + "\n"
        )
    return text


def main() -> None:
    labels = []
    n = 0
    for module in (bodies_en, bodies_es, bodies_fr, bodies_ro):
        lang = module.LANGUAGE
        for i, (intent, promised, address, late, body) in enumerate(module.REPLIES):
            n += 1
            written = (LATE if late else EARLY) + timedelta(minutes=7 * i)
            who, addr = module.SENDERS[i % len(module.SENDERS)]
            signature = module.SIGNATURES[i % len(module.SIGNATURES)].format(who=who, addr=addr)
            msg = EmailMessage()
            msg["From"] = f"{who} <{addr}>"
            msg["To"] = "Acme Accounts <ar@acme.example>"
            msg["Subject"] = module.SUBJECTS[i % len(module.SUBJECTS)]
            msg["Date"] = format_datetime(written)
            msg["Message-ID"] = f"<reply-{n:03d}@{addr.split('@')[1]}>"
            msg["In-Reply-To"] = "<dm-INV-1042@acme.example>"
            msg.set_content(wrap(lang, i, body, signature, written, who, addr))
            name = f"{n:03d}.eml"
            (HERE / name).write_bytes(bytes(msg))
            labels.append(
                {
                    "file": name,
                    "language": lang,
                    "intent": intent,
                    "date": promised,
                    "new_address": address,
                    "split": "dev" if n % 2 else "held_out",
                }
            )
    with (HERE / "labels.jsonl").open("w") as out:
        for row in labels:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
