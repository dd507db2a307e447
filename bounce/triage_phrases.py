"""PURE DATA: what a customer's reply to a reminder means, as phrase families per intent and
language (English, Spanish, French, Romanian).

Written from meaning, not from the labelled replies: each family says one thing a person
writes when they mean the intent ("we have paid", "the invoice is wrong", "we will pay on").
Patterns run on text that is lower-cased with accents and apostrophes folded
(bounce/triage.py ``fold``), so "pagué", "réglé" and "plătit" are written ``pague``, ``regle``
and ``platit``. ``ADDR`` stands for an email address.
"""

from __future__ import annotations

ADDR = r"[a-z0-9._%+'-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+"

# The customer says the money already left (past tense, done).
ALREADY_PAID: dict[str, tuple[str, ...]] = {
    "en": (
        r"\b(?:we|i)(?:'ve| have)? (?:already |just |now )?(?:paid|settled|wired|transferred)\b",
        r"\b(?:we|i)(?:'ve| have)? (?:already |just )?(?:made|sent|processed|released|"
        r"initiated) (?:the |a |our |full )?(?:payment|transfer|bank transfer|remittance)",
        r"\b(?:invoice|it|this|payment|balance|amount|bill|transfer)(?: has| have| was| were| is)"
        r" (?:already |actually )?(?:been )?(?:paid|settled|made|sent|processed|cleared)\b",
        r"\bpaid (?:in full|already|yesterday|last (?:week|month|friday|monday))",
        r"\balready (?:been )?paid\b",
        r"\b(?:proof|confirmation) of (?:payment|transfer)\b",
        r"\bremittance(?: advice)? (?:attached|below|enclosed)",
        r"\bpayment (?:confirmation|reference|receipt) (?:attached|below|enclosed|is)",
    ),
    "es": (
        r"\b(?:ya )?(?:hemos|he|habiamos) (?:pagado|abonado|transferido|liquidado|saldado)",
        r"\b(?:ya )?(?:hemos|he) (?:realizado|hecho|efectuado|enviado) (?:el |la )?"
        r"(?:pago|transferencia|abono)",
        # "pagamos" is also the present ("pagamos el viernes"): only with "ya" is it done.
        r"\bya (?:la |lo )?(?:pagamos|abonamos|transferimos|liquidamos)\b",
        r"\b(?:pague|abone|transferi)\b",
        r"\b(?:fue|ha sido|esta|estan|han sido|fueron) (?:ya )?(?:pagad[ao]s?|abonad[ao]s?|"
        r"liquidad[ao]s?|saldad[ao]s?)",
        r"\b(?:comprobante|justificante) de (?:pago|transferencia)",
        r"\bel pago se (?:realizo|hizo|efectuo|envio)",
        r"\bla transferencia se (?:realizo|hizo|efectuo|envio)",
    ),
    "fr": (
        r"\b(?:nous avons|j'ai|on a) (?:deja |bien )?(?:paye|regle|vire|solde|acquitte)",
        r"\b(?:nous avons|j'ai|on a) (?:deja |bien )?(?:effectue|fait|envoye|emis|passe) "
        r"(?:le |un |notre )?(?:paiement|virement|reglement)",
        r"\b(?:a|ont) (?:deja |bien )?ete (?:payee?s?|reglee?s?|viree?s?|soldee?s?|"
        r"acquittee?s?|effectuee?s?)",
        r"\b(?:est|sont) (?:deja )?(?:payee?s?|reglee?s?|acquittee?s?|soldee?s?)\b",
        r"\b(?:preuve|justificatif|avis|confirmation) de (?:paiement|virement|reglement)",
        r"\bnous avons regle\b",
    ),
    "ro": (
        r"\b(?:am|a|au|s-a) (?:deja |mai )?(?:platit|achitat|virat|transferat)",
        r"\b(?:am|a|au) (?:efectuat|facut|trimis) (?:deja )?(?:plata|transferul|viramentul)",
        r"\b(?:a|au) fost (?:deja )?(?:platite?a?|achitate?a?|virate?a?)",
        r"\b(?:este|e|sunt) (?:deja )?(?:platite?a?|achitate?a?)\b",
        r"\b(?:dovada|confirmarea) (?:de )?plat",
        r"\bordinul? de plata\b",
        r"\bplata a fost (?:efectuata|facuta|trimisa|procesata)",
    ),
}

# The customer says the invoice is wrong or not owed, or holds it back on purpose.
DISPUTE: dict[str, tuple[str, ...]] = {
    "en": (
        r"\bdisput(?:e|ed|ing)\b",
        r"\b(?:we|i) (?:do not|don't|dont) (?:agree|recogni[sz]e|owe|accept)\b",
        r"\b(?:incorrect|wrong|inaccurate|erroneous) (?:invoice|amount|price|pricing|charge|"
        r"quantity|rate|vat|billing|total)",
        r"\b(?:invoice|amount|price|charge|total|vat|rate)(?: \w+){0,2} (?:is|was|seems) "
        r"(?:incorrect|wrong|inaccurate|not correct|too high)",
        r"\bover ?charged\b",
        r"\b(?:charged|billed|invoiced) (?:us )?(?:twice|double)",
        r"\bduplicate (?:invoice|charge|billing)",
        r"\bnever (?:received|ordered|got|agreed)\b",
        r"\b(?:goods|items|delivery|order|product|parts|shipment|machine)"
        r" (?:were|was|are|is|arrived) (?:damaged|faulty|defective|missing|incomplete|broken)",
        r"\b(?:waiting for|need|expect|requested|asked for) a credit note",
        r"\bwithhold(?:ing)? (?:the )?payment",
        r"\b(?:will not|won't|refuse to) (?:be )?pay(?:ing)? (?:this|it|until)",
        r"\bnot (?:our|for us|ours)\b.{0,20}\binvoice|\binvoice\b.{0,20}\bnot ours\b",
        r"\b(?:we )?(?:cancelled|canceled) (?:the|this|our) (?:order|subscription|contract)",
    ),
    "es": (
        r"\b(?:disputa|reclamacion|reclamamos|impugna)",
        r"\bno (?:estamos|estoy) de acuerdo\b",
        r"\bno (?:reconocemos|reconozco|corresponde)\b",
        r"\b(?:factura|importe|precio|cantidad|cargo|iva|tipo|tarifa)(?: \w+){0,2} (?:es |esta )?"
        r"(?:incorrect[ao]|erronea?o?|equivocad[ao]|mal)\b",
        r"\b(?:cobrado|cobro|facturado) (?:dos veces|duplicado|de mas)",
        r"\bfactura duplicada\b",
        r"\bnunca (?:recibimos|hemos recibido|pedimos|encargamos)\b",
        r"\bno (?:hemos )?recibi(?:do|mos) (?:la |el |los |las )?(?:mercancia|pedido|material|"
        r"servicio|productos?|envio)",
        r"\b(?:llego|llegaron|vino|vinieron|esta|estan) (?:danad|defectuos|rot|incomplet)",
        r"\b(?:un |el |una |la )?(?:abono|nota de credito)\b",
        r"\bno (?:vamos a pagar|pagaremos)\b",
        r"\b(?:cancelamos|anulamos) (?:el|la|nuestro|nuestra) (?:pedido|contrato|suscripcion)",
    ),
    "fr": (
        r"\b(?:contest|litige|reclamation)",
        r"\b(?:ne sommes|ne suis) pas d'accord\b|\bpas d'accord avec",
        r"\bne (?:reconnaissons|reconnais) pas\b",
        r"\b(?:facture|montant|prix|quantite|tarif|tva|taux)(?: \w+){0,3} (?:est |semble )?"
        r"(?:erronee?|incorrecte?|fausse?|faux)\b",
        r"\b(?:facture|factures) (?:en )?(?:double|deux fois)\b|\bdoublon\b",
        r"\bn'avons (?:jamais|pas) (?:recu|commande) (?:la |le |les |cette |ce )?"
        r"(?:marchandise|commande|livraison|materiel|prestation|produit|colis)",
        r"\b(?:arrivee?s?|livree?s?) (?:endommag|abime|defectueu|casse|incomplet)",
        r"\b(?:un|d'un|votre|cet) avoir\b",
        r"\b(?:ne paierons|ne reglerons|ne payerons) pas\b",
        r"\bannule (?:la|notre|cette) commande",
    ),
    "ro": (
        r"\b(?:contest|disput|reclamati)",
        r"\bnu (?:suntem|sunt) de acord\b",
        r"\bnu (?:recunoastem|recunosc)\b",
        r"\b(?:factura|suma|pretul|cantitatea|tva|cota|valoarea)(?: \w+){0,3} (?:este |e )?"
        r"(?:gresita|gresit|incorecta|incorect|eronata|eronat)\b",
        r"\b(?:facturat[aei]?|taxat[aei]?) de doua ori\b|\bfactura dubla\b",
        r"\bnu am primit (?:niciodata )?(?:marfa|produsele|produsul|comanda|serviciul|livrarea)",
        r"\b(?:marfa|produsele|produsul|coletul) (?:a |au )?(?:sosit|ajuns|venit)? ?"
        r"(?:deteriorat|defect|incomplet|stricat)",
        r"\b(?:nota|factura) de (?:credit|stornare)\b|\bstorn",
        r"\bnu vom plati\b",
        r"\bam anulat (?:comanda|contractul|abonamentul)",
    ),
}

# A day ahead, named: with a verb in the present, it makes a promise ("je fais le virement demain").
_SOON = {
    "en": r"tomorrow|monday|tuesday|wednesday|thursday|friday|next week|on the \d|"
    r"end of the month|this week|\d",
    "es": r"manana|lunes|martes|miercoles|jueves|viernes|semana que viene|proxima semana|"
    r"fin de mes|el dia \d|el \d",
    "fr": r"demain|lundi|mardi|mercredi|jeudi|vendredi|semaine prochaine|fin du mois|"
    r"fin de mois|le \d",
    "ro": r"maine|poimaine|luni|marti|miercuri|joi|vineri|saptamana viitoare|"
    r"la sfarsitul lunii|pe \d",
}

# The customer says when (or that) they will pay: future, committed.
PROMISE_TO_PAY: dict[str, tuple[str, ...]] = {
    "en": (
        r"\b(?:will|'ll|shall|going to|plan to|intend to|expect to|aim to|able to)"
        r" (?:\w+ )?(?:pay|settle|transfer|remit|wire|clear)\b",
        r"\b(?:will|'ll|shall|going to|plan to|intend to|expect to|aim to) (?:\w+ )?"
        r"(?:make|send|process|release|arrange|schedule) (?:the |a |your )?(?:payment|transfer)",
        r"\bpayment (?:will|should|is going to|shall) (?:\w+ )?(?:be )?(?:made|sent|processed|"
        r"released|done|go out|leave|reach|arrive|be with you)",
        r"\b(?:will|should) be paid\b",
        r"\b(?:payment|transfer) (?:is |has been )?(?:scheduled|planned|booked|queued)",
        r"\bnext payment run\b",
        r"\bpay(?:ing)? (?:it |this |you |the balance )?(?:on|by|next|tomorrow|this|before|"
        r"at the end)\b",
        # the present for the future, with the day named: "I'm doing the transfer tomorrow"
        r"\b(?:i'm|we're|i am|we are) (?:paying|doing|sending|making|transferring|settling)\b"
        r"[^.\n]{0,40}\b(?:" + _SOON["en"] + r")",
    ),
    "es": (
        r"\b(?:pagaremos|abonaremos|transferiremos|liquidaremos|pagare)\b",
        r"\b(?:realizaremos|haremos|efectuaremos|enviaremos) (?:el |la )?(?:pago|transferencia)",
        r"\b(?:vamos|voy) a (?:pagar|abonar|transferir|liquidar|realizar|hacer|efectuar)\b",
        r"\b(?:se|lo) (?:pagara|abonara|transferira|liquidara)\b",
        r"\bsera (?:pagad|abonad|transferid|liquidad)",
        r"\b(?:el pago|la transferencia) se (?:realizara|hara|efectuara|enviara)",
        r"\bprocederemos (?:al|a) (?:pago|abonar|pagar)",
        r"\b(?:pago|transferencia) (?:esta |queda )?(?:programad|previst)",
        # the present for the future, with the day named: "mañana os hago la transferencia"
        # ("pago" and "abono" are nouns too: "el pago se realizó el viernes" is no promise)
        r"\b(?:" + _SOON["es"] + r")\b[^.\n]{0,20}\b(?:hago|hacemos|mando|mandamos|pagamos|"
        r"abonamos|transfiero|transferimos|realizamos)\b",
        r"\b(?:hago|hacemos|mando|mandamos|pagamos|abonamos|transfiero|transferimos|"
        r"realizamos)\b[^.\n]{0,40}\b(?:" + _SOON["es"] + r")\b",
    ),
    "fr": (
        r"\b(?:reglerons|paierons|payerons|virerons|solderons|reglerai|paierai|payerai)\b",
        r"\b(?:effectuerons|ferons|enverrons|lancerons) (?:le |un )?(?:paiement|virement|"
        r"reglement)",
        r"\b(?:allons|vais) (?:\w+ )?(?:regler|payer|virer|solder|proceder|effectuer|faire le "
        r"(?:paiement|virement))",
        r"\bprocederons (?:au|a) (?:paiement|reglement|virement)",
        r"\bsera (?:reglee?|payee?|viree?|effectuee?|soldee?)\b",
        r"\b(?:le paiement|le virement|le reglement) (?:sera|partira|est prevu|interviendra|"
        r"devrait)",
        r"\b(?:paiement|virement|reglement) (?:est )?(?:prevu|programme|planifie)",
        # the present for the future, with the day named: "je fais le virement demain"
        r"\b(?:je fais|on fait|nous faisons|je lance|on lance|je paie|on paie|nous payons|"
        r"je regle|on regle|nous reglons|je vire|on vire)\b[^.\n]{0,40}\b(?:"
        + _SOON["fr"]
        + r")\b",
    ),
    "ro": (
        r"\b(?:vom|voi|o sa|o) (?:\w+ )?(?:plati|achita|vira|transfera|platim|achitam|viram|"
        r"platesc|achit|virez)\b",
        r"\b(?:vom|voi|o sa) (?:face|efectua|trimite) (?:plata|transferul|viramentul)",
        r"\bva fi (?:platita|achitata|virata|efectuata|facuta)",
        r"\bplata (?:va fi|se va face|se va efectua|o facem|o vom face|este programata)",
        r"\b(?:platim|achitam|viram|platesc|achit) (?:factura |suma )?(?:pe|maine|saptamana|"
        r"luni|marti|miercuri|joi|vineri|la sfarsitul|pana)",
        # the present for the future, with the day named: "fac transferul mâine"
        r"\b(?:fac|facem|platesc|platim|achit|achitam|virez|viram|trimit|trimitem)\b[^.\n]{0,40}"
        r"\b(?:" + _SOON["ro"] + r")\b",
    ),
}

# Whoever got the email is not (or no longer) the one to chase.
WRONG_CONTACT: dict[str, tuple[str, ...]] = {
    "en": (
        r"\bno longer (?:works?|working|with|at|employed|part of|handles?|responsible|in charge|"
        r"deals?|looks)",
        r"\b(?:has|have) (?:now )?left (?:the company|the business|us|our company|the firm)",
        r"\bleft the (?:company|business|firm)\b",
        r"\bwrong (?:person|contact|address|email|recipient|department|company)\b",
        r"\bnot the (?:right|correct|appropriate) (?:person|contact|address|department)",
        r"\b(?:send|address|direct|forward|redirect|email|contact)\b[^.\n]{0,50}?(?:to|at)?"
        r" " + ADDR,
        r"\bupdate your (?:records|contact|details|system)",
        r"\b(?:i am|i'm) not (?:responsible|in charge|the right person|dealing)",
    ),
    "es": (
        r"\bya no (?:trabaja|esta|forma parte|se encarga|lleva|pertenece)",
        r"\b(?:dejo|ha dejado|abandono) la empresa",
        r"\b(?:persona|direccion|contacto|destinatario|correo) (?:equivocad[ao]|incorrect[ao])",
        r"\bno soy (?:la persona|el responsable|la responsable|quien)",
        r"\b(?:envie|envien|enviad|dirija|dirijan|remita|remitan|mande|manden|escriba|escriban|"
        r"contacte|contacten|enviar|dirigir)\b[^.\n]{0,60}?" + ADDR,
        r"\bactualic\w* (?:sus|los|el|la) (?:datos|contacto|direccion|registros)",
        r"\bequivocad[oa]s? de (?:destinatario|persona|empresa|direccion|contacto|cliente)",
    ),
    "fr": (
        r"\bne (?:travaille|fait|fais|s'occupe|gere) plus\b|\bn'(?:est|fait|occupe|est plus)"
        r"(?: plus)?\b.{0,20}\bplus (?:chez|dans|partie|en charge)",
        r"\ba quitte (?:la societe|l'entreprise|la soci|nos|l'equipe|notre)",
        r"\bmauvais(?:e)? (?:personne|contact|adresse|destinataire|interlocuteur)",
        r"\bpas (?:la bonne|le bon) (?:personne|adresse|interlocuteur|contact)",
        r"\bne suis pas (?:la bonne personne|le bon interlocuteur|en charge|responsable)",
        r"\b(?:envoyer|adresser|transmettre|envoyez|adressez|contacter|contactez|ecrire|"
        r"ecrivez|renvoyer|renvoyez)\b[^.\n]{0,60}?" + ADDR,
        r"\bmettre a jour (?:vos|votre) (?:fichiers|coordonnees|contact|base)",
        r"\btrompee?s? de (?:destinataire|personne|adresse|societe|contact|client)",
    ),
    "ro": (
        r"\bnu mai (?:lucreaza|lucrez|este|e|face parte|se ocupa|ma ocup|lucram)",
        r"\ba plecat din (?:firma|companie|societate)",
        r"\b(?:persoana|adresa|contactul) (?:gresita|gresit|nepotrivita|incorecta)",
        r"\bnu sunt persoana\b",
        r"\b(?:trimiteti|trimite|adresati|contactati|scrieti|redirectionati|trimiteti-le)\b"
        r"[^.\n]{0,60}?" + ADDR,
        r"\bactualizati (?:datele|adresa|contactul|baza)",
        r"\bgresit (?:destinatarul|adresa|persoana|firma|clientul)",
    ),
}

# A person (not an autoresponder) says they are away.
OUT_OF_OFFICE: dict[str, tuple[str, ...]] = {
    "en": (
        r"\b(?:i am|i'm|i will be|i'll be) (?:currently |now )?(?:out of (?:the )?office|on "
        r"(?:annual |parental |sick |maternity )?leave|on holiday|on vacation|away|travelling)",
        r"\bout of (?:the )?office\b",
        r"\bback (?:in the office )?on\b|\bwill be back\b|\breturn(?:ing)? (?:to the office )?on",
    ),
    "es": (
        r"\b(?:estoy|estare) (?:de vacaciones|fuera de la oficina|de baja|ausente|de viaje)",
        r"\bfuera de la oficina\b",
        r"\b(?:vuelvo|regreso|volvere|regresare)\b|\bde vuelta el\b",
    ),
    "fr": (
        r"\b(?:je suis|je serai) (?:actuellement )?(?:absente?|en conges?|en vacances|en "
        r"deplacement|en arret)",
        r"\bde retour (?:le|au bureau|lundi|mardi|mercredi|jeudi|vendredi)\b",
        r"\bhors du bureau\b",
    ),
    "ro": (
        r"\b(?:sunt|voi fi) (?:in concediu|plecat|plecata|in afara biroului|absent|absenta)",
        r"\bin concediu\b",
        r"\bma intorc\b|\brevin (?:la birou )?(?:pe|in|luni|marti|miercuri|joi|vineri)\b",
    ),
}

# A word right after a day that puts it in the past: "el viernes pasado", "vendredi dernier".
PAST_AFTER = r"^\W{0,3}(?:pasad[oa]|dernier|derniere|trecut[aa]?|ago)\b"

# Words that undo a statement when they stand shortly before it in the same clause, or make
# it a supposition: "we have NOT paid", "no hemos pagado", "nous n'avons pas", "nu am plătit",
# "if we paid".
NEGATION = (
    r"\b(?:not|never|no|nor|n't|dont|didnt|havent|hasnt|wasnt|cannot|can't|couldn't|unable|"
    r"yet to|if|whether|no|nunca|todavia no|aun no|tampoco|si|ni|pas|jamais|ne|n'|sans|"
    r"nu|niciodata|inca nu|daca|fara)\b|n't\b"
)
