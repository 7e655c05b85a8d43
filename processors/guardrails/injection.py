"""Prompt-injection detection: explainable rules in eight languages, decoded variants, and a small linear model.

Why rules decide and the model only flags on its own: the labelled injection sets that exist offline are short
attacks against generic questions. A word model trained on them learns that "your", "please", "answer" and
"previous" mean attack, and blocks one support message in eight. Attacks, though, have to *say* what they want:
to drop the operator's instructions, reveal hidden text or secrets, switch off a safety function, adopt an
unrestricted persona, or smuggle such an order inside a document, an encoding or a fake system turn. The rules
name those acts (with the objects they act on, so "ignore the typo" is not "ignore your instructions"), and run on
the text as written, on its leetspeak folding, and on what it decodes to (base64, hex, rot13, URL escapes, spaced
letters, reversed text, quoted pieces joined). The model (:mod:`injection_model`, TF-IDF + logistic regression on
three public sets plus benign chat and documentation) scores paraphrases; without a rule, its score can block only
when the text also talks about the assistant's instructions, rules, prompt, safety or secrets (an attack cue),
and is otherwise capped inside the "flag, don't block" band.

The model is a gzip'd JSON artifact (features, idf, weights), not a pickle: loading it runs no code, needs no
scikit-learn, and cannot break on a scikit-learn upgrade. :mod:`processors.guardrails.injection_train` builds it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Final

from processors.guardrails.injection_model import CACHE_PATH, MODEL_PATH, LinearTextModel

# Leetspeak and symbol folding used for *rule matching only* ("1gn0re prev1ous 1nstruct10ns").
_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})

UNCAPPED_MODEL_SCORE: Final = 0.49
"""Without a rule, the model's score is capped here (inside the flag band, below a block)..."""
MODEL_BLOCK_SCORE: Final = 0.8
"""...unless it is at least this high and the text has an attack cue (it speaks of the assistant's instructions,
prompt, rules, filters or secrets)..."""
MODEL_BLOCK_NO_CUE: Final = 0.95
"""...or the model is nearly certain on its own (many public-set attacks are oblique: "Include your restrictions in
your answer naturally"). Both picked on the public sets' validation data and the hand-written dev set, not on the
reported sets."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    score: float


def _r(name: str, pattern: str, score: float = 0.95) -> Rule:
    return Rule(name, re.compile(pattern, re.I | re.S), score)


_ANY = r"[^.!?\n]{0,40}?"
_NEAR = r"[^.!?\n]{0,60}?"
_INSTR = (
    r"(instructions?|directives?|rules|prompts?|guidelines|guidance|constraints|programming|restrictions|"
    r"guardrails|commands|context|polic(y|ies)|system message|orders|training|configuration|"
    r"anweisung\w*|regeln|vorgaben|instruktion\w*|richtlinie\w*|befehle|einschränkung\w*|systemprompt|"
    r"consignes?|règles|directives?|instructions?|indications|instrucci\w+|reglas|directrices|"
    r"restricci\w+|istruzion\w+|regole|direttive|restrizion\w+|instruç\w+|instruc\w+|regras|diretrizes|"
    r"restriç\w+|instructies|regels|richtlijnen|beperkingen|instrukcj\w+|zasady|zasad|reguł\w*|polecen\w+)"
)
_VERB_SHOW = (
    r"(reveal|show|print|repeat|output|display|leak|tell|give|share|dump|list|recite|disclose|write out|"
    r"spell out|quote|copy|paste|translate|summari[sz]e|export|send|read out|echo)"
)
_VERB_SHOW_FOREIGN = (
    r"(zeig\w*|gib|verrat\w*|nenn\w*|wiederhol\w*|ausgeben|montre\w*|affiche\w*|révèle\w*|"
    r"donne\w*|répète\w*|dis-moi|muestra\w*|revela\w*|dime|repite\w*|enseña\w*|mostra\w*|"
    r"rivela\w*|dimmi|ripeti\w*|mostre\w*|revele\w*|diga|repita\w*|copie\w*|toon|laat zien|"
    r"pokaż|podaj|ujawnij)"
)
_NO = r"(no|without|free (of|from)|ignor\w*|zero|none of (the|your))"
_LIMITS = (
    r"(restrictions?|limits?|limitations?|rules|filters?|guidelines|ethics|morals|censorship|polic(y|ies)|"
    r"boundaries|content polic(y|ies)|safeguards|guardrails)"
)
_FOREIGN_WITHOUT = (
    r"(sin|ohne|sans|senza|sem|zonder|bez)\s+(\w+\s+)?(reglas|regeln|règles|regole|regras|regels|"
    r"zasad|filtros|filter|filtres|filtri|filters|filtrów|restricciones|einschränkungen|"
    r"restrictions|restrizioni|restrições|beperkingen|ograniczeń|censura|zensur|censure|"
    r"límites|limites|grenzen|limiti|cenzury)"
)

RULES: Final[tuple[Rule, ...]] = (
    _r(
        "ignore_instructions",
        rf"\b(ignore|disregard|forget|override|bypass|abandon|throw away|set aside|discard|drop|stop following|"
        rf"no longer follow|don'?t follow|do not follow|nevermind|never mind)\b{_ANY}\b(previous|prior|above|"
        rf"earlier|preceding|all|your|original|initial|system|safety|those|these|every|any|the operator'?s?|"
        rf"the developer'?s?|given|earlier)\b{_ANY}\b{_INSTR}\b",
    ),
    _r(
        "ignore_instructions",
        r"\b(forget|disregard|ignore)\s+(everything|all|anything)\s+(you (were|have been) told|above|before|"
        r"(that )?i (said|told you)|previous(ly)?|so far|up to now)\b|\b(ignore|disregard|forget)\s+(the\s+|all\s+)?"
        r"(above|previous|prior)\s*([.,;:!]|and\b|$)|\b(never ?mind|forget|ignore) the (context|sources|documents)\b",
    ),
    _r(
        "ignore_instructions",
        r"\b(your|the|these|my|those)\s+(\w+\s+)?(instructions|rules|guidelines|restrictions|directives|policies)"
        r"\s+(no longer|don'?t|do not|shall not|won'?t) apply\b|\bwhatever (your|the) (instructions|rules|"
        r"guidelines|system prompt) (say|says)\b",
    ),
    _r(
        "ignore_instructions",
        rf"\b(ignorier\w*|vergiss|vergessen sie|missacht\w*|übergeh\w*|umgeh\w*|ignorez|ignore|oublie\w*|néglige\w*|"
        rf"ignora\w*|olvida\w*|olvide\w*|omite|dimentica\w*|trascura\w*|esqueç\w*|esquec\w*|desconsider\w*|"
        rf"negeer|vergeet|zignoruj|ignoruj|zapomnij)\b{_NEAR}\b(alle\w*|vorherig\w*|bisherig\w*|obig\w*|"
        rf"précédent\w*|antérieur\w*|tout\w*|anterior\w*|previ\w*|precedent\w*|todas|todos|tutte|tutti|"
        rf"eerdere|vorige|alle|poprzedni\w*|wszystkie|deine|tes|tus|tue|suas|je|twoje|ci|di sistema|du système|"
        rf"del sistema|do sistema)\b{_NEAR}\b{_INSTR}",
    ),
    _r(
        "new_instructions",
        r"\b(new|updated|real|actual|secret|revised|override)\s+(instructions?|directives?|system prompt|task|"
        r"rules|objective|role|orders)\s*(:|-|are\b|follow\b)|\byour (new|real|actual|true) (task|job|purpose|"
        r"instructions?|role|goal|objective) (is|are)\b"
        r"|\bfrom (now on|this point (on|forward)|here on),?\s+(you\s+(are|will|must|shall|can)\s+(now\s+)?(only|"
        r"ignore|obey|be|act|no longer|free|unrestricted|follow only)|ignore|disregard|forget|my (words|"
        r"instructions|messages) are|there are no (rules|restrictions|limits)|answer (without|with no)|"
        r"respond (without|with no)|you('re| are) (in )?(developer|dan|unrestricted|jailbreak|god) mode)",
        0.85,
    ),
    _r(
        "prompt_exfiltration",
        rf"\b{_VERB_SHOW}\b{_ANY}\b(your|the assistant'?s?|the model'?s?|the bot'?s?)\s+(\w+\s+){{0,2}}(prompt|"
        rf"instructions?|directives?|system message|programming|configuration|config|initiali[sz]ation|rules|"
        rf"guidelines|pre-?prompt|setup|context window)\b"
        rf"|\b{_VERB_SHOW}\b{_ANY}\b(hidden|secret|initial|original|internal|developer|pre-?|confidential)\s*"
        rf"(system\s+)?(prompt|message|instructions|text|rules|configuration|config|notes)\b"
        rf"|\b{_VERB_SHOW}\b{_ANY}\b(text|words|everything|anything|message|content)\s+(that\s+)?(comes?\s+|is\s+|"
        rf"was\s+)?(above|before|prior to)\s+(this|my|the user'?s?)\b",
    ),
    _r(
        "prompt_exfiltration",
        r"\bwhat (were you|have you been) (told|instructed|programmed|given)\b|\bwhat (are|were) your (initial |"
        r"original |hidden |system |secret )?(instructions|rules|directives|guidelines)\b(?!\s+(for|on|to|about|"
        r"regarding|when|if|with))|\bwhat('s| is) (in )?your "
        r"(system |initial |original |hidden )?prompt\b|\byour (first|initial|original|very first) (message|"
        r"instructions?|prompt)\b[^.!?\n]{0,40}\b(word for word|verbatim|exactly|quote|repeat|copy|print)"
        r"|\b(word for word|verbatim)\b[^.!?\n]{0,40}\b(instructions|prompt|system message|rules)\b",
        0.9,
    ),
    _r(
        "prompt_exfiltration",
        rf"\b{_VERB_SHOW_FOREIGN}\b{_NEAR}\b(systemprompt|system-prompt|prompt\s+(système|systeme|del sistema|"
        rf"de sistema|di sistema|do sistema|initial\w*)|(instructions?|consignes|instrucciones|istruzioni|instruções|"
        rf"anweisungen|instructies|instrukcje)\s+(\w+\s+)?(système|systeme|del sistema|di sistema|do sistema|"
        rf"initiales|iniciales|iniziali|iniciais|cachées|ocultas|nascoste|versteckten|geheimen|systemowe)|"
        rf"(versteckten|geheimen|ursprünglichen) (anweisungen|regeln|prompt))"
        rf"|\b(qual (é|foi|e) o (seu |teu )?prompt|quel (est|était) (ton|votre) prompt|cuál (es|fue) tu prompt|"
        rf"qual (è|era) il tuo prompt|was ist dein (system)?prompt|wat is je (systeem)?prompt)"
        rf"|\b(prompt|invite) (essentiel|initial|de départ|de sistema|inicial|original)\w*\b{_NEAR}\b(formation|"
        rf"treinamento|entrenamiento|training|addestramento)",
        0.9,
    ),
    _r(
        "secrets_exfiltration",
        rf"\b{_VERB_SHOW}\b{_NEAR}\b(api[ _-]?keys?|secret keys?|access tokens?|auth tokens?|bearer tokens?|"
        rf"credentials|passwords?|private keys?|connection strings?|"
        rf"(your|the (server|host|system|container|process)'?s?) env(ironment)? variables?|"
        rf"(other|all other|another) (customers?|tenants?|users?|clients?|companies)'?s?'? (\w+ )?(data|documents?|"
        rf"files|chats?|conversations?|records|emails|tickets)|(all|every) (stored |the )?(chat logs?|conversations|"
        rf"customer (data|list|records)|user data|documents? in (your|the) index|users|passwords)|"
        rf"(whole|entire|full) (database|index|customer list|user table))\b",
        0.9,
    ),
    _r(
        "roleplay_jailbreak",
        rf"\b(you are now|you're now|act as|acting as|pretend (to be|you are|you're)|roleplay as|role-play as|"
        rf"behave as|simulate|play the role of|you will be|become|imagine you are|you are)\b[^.!?\n]{{0,80}}\b{_NO}\b"
        rf"[^.!?\n]{{0,30}}\b({_LIMITS}|ai|assistant|anything)\b",
    ),
    _r(
        "roleplay_jailbreak",
        r"\b(an?|the)\s+(ai|assistant|model|chatbot|bot|llm)\s+(with|that has|having|without)\s+(no|any|zero)?\s*"
        r"(rules|restrictions|filters|limits|guidelines|content polic(y|ies)|ethics|morals|censorship)\b"
        r"|\b(stay|remain|keep) in character\b|\bnever (refuses?|says? no)\b|\balways (answers?|complies|obeys)\b"
        r"|\bansw\w* (anything|everything|every question) without\b"
        r"|\b(grandma|grandmother|granny|late \w+) (who )?(used to|would) (read|tell|recite|sing)\b"
        r"|\b(fictional|hypothetical|imaginary|alternate) (world|universe|scenario|story|setting) (where|in which)\b"
        r"[^.!?\n]{0,60}\b(no (rules|restrictions|guidelines|limits|laws|filters)|anything is allowed)",
        0.9,
    ),
    _r(
        "roleplay_jailbreak",
        rf"\b(actúa|actua|finge|pretende|actuar|tu so|stell dir vor|spiel\w*|fais comme si|agis|joue|comportati|"
        rf"fingi|fai finta|aja|finja|gedraag je|doe alsof|udawaj|zachowuj się)\b[^.!?\n]{{0,80}}{_FOREIGN_WITHOUT}"
        rf"|\b(ia|ki|ai|intelligence artificielle|inteligencia artificial|intelligenza artificiale)\b"
        rf"[^.!?\n]{{0,40}}{_FOREIGN_WITHOUT}",
        0.9,
    ),
    _r(
        "dan_mode",
        # not "debug mode" or "dev mode": real features of the software this product documents (Python's
        # Development Mode, a framework's debug mode) that questions name with "enabled" and "on"
        r"(?-i:\bDAN\b)|\bdo anything now\b|\b(jailbreak|jailbroken|unrestricted|unfiltered|uncensored|developer|"
        r"god|evil|sudo|admin)\s+mode\b[^.!?\n]{0,60}\b(no|never|without|enabled|activated|on|"
        r"filters?|refuse|anything|rules)\b|\b(enable|enter|activate|switch to|turn on)\s+(\w+\s+)?(developer|"
        r"jailbreak|unrestricted|god|dan|unfiltered|sudo)\s+mode\b",
        0.9,
    ),
    _r(
        "disable_safety",
        r"\b(disable|turn off|deactivate|remove|bypass|ignore|circumvent|switch off|lift|skip|drop|suspend|"
        r"override|get around|turn down)\b[^.!?\n]{0,30}\b(your|the assistant'?s?|the model'?s?|safety|ethical|"
        r"moderation|content|security|pii|privacy|all)\s+(safety\s+|ethical\s+|content\s+|security\s+|pii\s+|"
        r"privacy\s+)?(filters?|guardrails|safeguards|restrictions|protocols|guidelines|alignment|training|checks?|"
        r"masking|moderation|redaction|protections?|policies|limits|rules)\b",
        0.9,
    ),
    _r(
        "disable_safety",
        r"\b(turn off|disable|stop|skip|remove|without)\s+(the\s+|any\s+)?(pii\s+|data\s+|personal data\s+)?"
        r"(masking|redaction|anonymi[sz]ation)\b|\bunmask\w*\b|\b(show|give|see)\b[^.!?\n]{0,30}\b(real|unmasked|"
        r"full|raw) (card numbers|ssns?|social security numbers|emails|phone numbers|personal data|pii)\b"
        r"|\b(answer|respond|reply|write)\w*\b[^.!?\n]{0,30}\bwithout (any )?(citations?|sources|citing|references)\b"
        r"|\b(make up|invent|fabricate|hallucinate|guess)\b[^.!?\n]{0,20}\b(the )?(numbers|facts|figures|data|"
        r"sources|citations|answers?|statistics)\b[^.!?\n]{0,30}\b(if|when|don'?t know|not sure|unknown)"
        r"|\b(answer|respond|reply)\w*\b[^.!?\n]{0,40}\bwith (no|zero) (restrictions|limits|filters|rules|"
        r"censorship)\b",
        0.85,
    ),
    _r(
        "disable_safety",
        r"\b(deaktivier\w*|schalte\w*|umgeh\w*|désactiv\w*|contourn\w*|desactiv\w*|salta|disattiv\w*|disabilit\w*|"
        r"desativ\w*|deslig\w*|schakel\w*|zet|wyłącz\w*|wylacz\w*)\b[^.!?\n]{0,40}\b(sicherheitsfilter\w*|filter\w*|"
        r"schutz\w*|sicherheit\w*|zensur|filtres?|sécurité|protections?|censure|masquage|filtros?|seguridad|"
        r"políticas|censura|filtri|sicurezza|politiche|segurança|veiligheid\w*|beperkingen|filtry|zabezpiecze\w*|"
        r"ograniczenia)\b"
        r"|\b(ignora\w*|ignore\w*|ignoriere\w*|negeer)\b[^.!?\n]{0,30}\b(políticas|politiche|políticas|richtlinien|"
        r"politiques|sicherheitsrichtlinien|tus políticas|le tue politiche)\b",
        0.9,
    ),
    _r(
        "fake_system_turn",
        r"<\|?(im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id)\|?>|\[/?(inst|sys)\]|<</?sys>>"
        r"|(^|\n)\s*(system|admin|developer|root)\s*(prompt|override|message|note)?\s*:[^\n]{0,80}\b(ignore|"
        r"disregard|override|you (are|must|will)|new (rules?|instructions?)|reveal|disable|the assistant (must|"
        r"will|should)|comply|unrestricted)\b"
        r"|#{2,}\s*(system|admin|developer|instructions?|new instructions?)\b\s*:?"
        r"|\[\s*(system|admin|developer|sys|root)(\s+(override|message|prompt|note|mode|instruction))?\s*[\]:]"
        r"|\"role\"\s*:\s*\"(system|developer)\"|'role'\s*:\s*'(system|developer)'"
        r"|</\s*(context|sources?|documents?|system|instructions|user|retrieved|search_results)\s*>"
        r"|\bnew system (message|prompt|instructions?|rules?)\s*:"
        r"|\b(priority|action|mode)\s*=\s*(override|reveal\w*|unrestricted|jailbreak|admin|disable\w*)",
        0.85,
    ),
    _r(
        "indirect_instruction",
        r"\b(note|message|instructions?|hinweis|nota|remarque|notice|attention)\s+(to|for|an|pour|para|per|voor)\s+"
        r"(the |die |der |l'|la |el |il |de )?(ai|a\.i\.|assistant|model|llm|chatbot|bot|ki|ia|gpt|language model)\b"
        r"|\b(ai|a\.i\.|assistant|chatbot|llm|language model|bot|gpt|ki|ia)\s*[,:]\s*(please\s+)?(ignore|disregard|"
        r"forget|you must|send|reveal|tell|reply|forward|approve|do not|don'?t|output|say|include|append|"
        r"ignoriere|ignora|ignore|oublie|olvida)\b"
        r"|\b(the|any|all)\s+(ai|assistant|model|llm|chatbot|bot)s?\s+(reading|processing|summari[sz]ing)\b"
        r"|<!--[^>]{0,200}\b(assistant|ai|llm|model|ignore|instruction|disregard|reply|reveal)\b[^>]{0,200}-->"
        r"|\bimportant\s*[:!]\s*(the\s+)?(assistant|ai|model|llm|chatbot)\s+(must|should|will|needs to)\b"
        r"|\b(when|while|if) (you('re| are)? )?(summari[sz]ing|translating|reading|processing|reviewing) (this|"
        r"the)\b[^.!?\n]{0,60}\b(tell|say|respond|reply|ignore|approve|include|send|claim)\b",
        0.9,
    ),
    _r(
        "social_engineering",
        r"\b(i am|i'm|this is|we are|speaking as|as)\s+(the |a |an |your )?(lead |senior |chief |head |system |"
        r"principal )?(developer|dev|admin|administrator|sysadmin|owner|ceo|cto|ciso|engineer|police|officer|"
        r"detective|fbi|agent|it security|security team|auditor|moderator|creator|operator|vendor|openai|"
        r"anthropic|support staff|staff|maintainer|programmer|root user)\b[^\n]{0,120}\b(print|show|reveal|give|"
        r"disable|turn off|grant|allow|override|bypass|export|dump|send|unlock|lift|display|need you to|"
        r"authori[sz]ed|allowed|permitted)\b[^\n]{0,80}\b(config\w*|prompt|instructions|logs?|data|documents?|"
        r"filters?|safety|restrictions|access|other|all|secrets?|keys?|passwords?|tenants?|customers?|settings|"
        r"content filter|moderation|masking)\b",
        0.85,
    ),
    _r(
        "social_engineering",
        r"\b(you are|you're) (now )?(allowed|authori[sz]ed|permitted|cleared) to\b[^.!?\n]{0,40}\b(show|reveal|"
        r"ignore|bypass|disable|share|give|see|access|break)\b"
        r"|\b(je suis|ich bin|soy|sono|sou|ik ben|jestem)\s+(l'|le |la |der |die |el |la |il |o |a |de )?"
        r"(administrat\w+|admin|développeu\w+|entwickler\w*|desarrollador\w*|sviluppator\w+|desenvolvedor\w*|"
        r"ontwikkelaar|policier|polizei|policía|polizia|polícia|politie|policja|propriétaire|propietario|"
        r"proprietario|eigentümer)\b[^\n]{0,80}\b(désactiv\w*|montre\w*|donne\w*|deaktivier\w*|zeig\w*|gib|"
        r"desactiv\w*|muestra\w*|dame|disattiv\w*|mostra\w*|dammi|desativ\w*|mostre\w*|schakel\w*|toon|geef|"
        r"wyłącz\w*|pokaż|daj)\b",
        0.85,
    ),
    _r(
        "payload_split",
        r"\b(join|concatenate|combine|merge|put together|assemble|glue)\b[^.!?\n]{0,40}\b(them|the (words|parts|"
        r"pieces|strings|fragments|variables|letters))\b[^\n]{0,60}\b(execute|follow|do it|do what|obey|run|"
        r"perform|act on|comply)"
        r"|\b(do|execute|run|follow|perform)\s+([a-z]\s*\+\s*[a-z]|[a-z]\s*\+\s*[a-z]\s*\+\s*[a-z])\b"
        r"|\b(do|execute|run|follow|perform)\s+[A-Z]\b(?=[.!]?\s*$)"
        r"|\bsay go\b[^\n]{0,80}\bdo\s+\w+",
        0.85,
    ),
    _r(
        "decode_and_follow",
        r"\b(decode|decrypt|reverse|unscramble|deobfuscate)\b[^\n]{0,80}\b(and|then)\s+"
        r"(do|follow|execute|obey|run|perform|act on|comply with|carry out)\b"
        r"|\b(translate|convert|read)\b[^\n]{0,80}\b(and|then)\s+(do (what|as)|follow|obey|act on|comply with|"
        r"carry out)\b"
        r"|\b(translate|convert)\b[^\n]{0,40}\b(rot-?13|base-?(64|32|85)|hex|binary|morse|caesar|leet)\b[^\n]{0,40}"
        r"\b(and|then)\s+(execute|run|perform)\b"
        r"|\b(follow|execute|obey|do what)\b[^\n]{0,40}\b(decoded|it says|the decoded|instructions (in|inside))\b",
        0.85,
    ),
    _r(
        "prompt_exfiltration",
        r"\b(repeat|print|output|recite|copy|echo|type out)\b[^.?!\n]{0,30}\b(words|text|everything|all|lines|"
        r"content)\s+(above|before this|preceding|prior)\b|\bstarting with ['\"]?you are\b",
        0.85,
    ),
    _r(
        "data_exfiltration",
        r"\b(send|e-?mail|forward|post|upload|transfer|exfiltrate|copy|leak|mail|submit|envoie\w*|envoyer|schick\w*|"
        r"sende\w*|envía\w*|enviar|invia\w*|inviare|envie\w*)\b[^\n]{0,80}\b(to|an|à|a|al|para|naar|do)\s+"
        r"(an?\s+|l'|the\s+|die\s+)?(external|outside|externe|externa|esterno|attacker|[\w.+-]+@[\w-]+\.[\w.]+|"
        r"https?://|adresse externe|address (below|above)|this (address|url|webhook))"
        r"|\b(collect|gather|extract|harvest|rassemble\w*|sammle\w*|recopila\w*|raccogli\w*)\b[^.!?\n]{0,40}"
        r"\b(customer|client|user|kunden|clients?|clientes|utenti)\w*\s+(data|emails?|records|list|daten|données|"
        r"donnees|datos|dati|dados|and api keys)",
        0.9,
    ),
    # An injected tool call names a tool that acts (delete_file, http_post, send_email) and aims it at something
    # (a path, a URL, an address) or at the moment before the reply. Technical writing names functions too, "use
    # Py_BuildValue() to", "call do_handshake() to": in the Python 3.11 docs that looser form ("use/call
    # <snake_name> to") matched 536 of 401k sentences, none an attack; this one matches none.
    _r(
        "tool_injection",
        r"\b(call|invoke|use|run|trigger|execute)\s+(the\s+|your\s+)?`?[a-z]+_[a-z_]+`?(\(\))?\s+tool\b"
        r"|(?<!\bI )(?<!\bwe )(?<!\bto )(?-i:\b(call|invoke|use|run|trigger|execute|Call|Invoke|Use|Run|Trigger|"
        r"Execute)\s+(the\s+)?`?(delete|remove|send|post|http|write|exec|upload|transfer|forward|export|grant|drop|"
        r"rm|shell|email|mail|wire|pay|refund|approve|reset|share|invite|publish|submit|purge|wipe|disable|update|"
        r"create|run|execute)_[a-z_]++`?)(?!\s*\()[^.!?\n]{0,80}(\s(/|\./|~/)\w|https?://|[\w.+-]+@[\w-]+\.\w|"
        r"\bbefore (you |responding|replying|answering))"
        r"|\b(ai|coding|llm|autonomous)\s+agents?\b[^.!?\n]{0,60}\b(should|must|need to|are required to|first)\b"
        r"|\bfor ai (coding )?agents\b",
        0.85,
    ),
    _r(
        "persistence",
        r"\b(remember|memori[sz]e)\b[^.!?\n]{0,50}\b(for (all )?future|in every (future )?"
        r"(reply|response|answer|report|message|session)|across sessions|from now on|permanently)\b"
        r"|\b(save|store|keep)\b[^.!?\n]{0,50}\b(for (all )?future (replies|responses|answers|conversations|chats)|"
        r"in every (future )?(reply|response|answer|report|message)|from now on)\b"
        r"|\bmust be (included|appended|added|inserted|mentioned|shown)\b[^.!?\n]{0,40}\b(every|each|all) "
        r"(future )?(reply|response|answer|report|summary|message)s?\b"
        r"|\b(include|append|add|insert)\b[^.!?\n]{0,40}\b(in|to|at the end of) (every|each|all) (future )?"
        r"(reply|response|answer|report|summary|message)s?\b"
        r"|\b(muss|deve|doit|debe|moet)\b[^.!?\n]{0,60}\b(jeder antwort|ogni risposta|chaque réponse|cada "
        r"respuesta|elke reactie|toda resposta)\b",
        0.85,
    ),
    _r(
        "fake_system_turn",
        r"\b(systemhinweis|systemnachricht|systemanweisung\w*|nota di sistema|nota del sistema|note système|"
        r"note systeme|message système|mensaje del sistema|messaggio di sistema|mensagem do sistema|"
        r"systeembericht|komunikat systemowy)\b\s*:",
        0.85,
    ),
    _r(
        "new_instructions",
        r"\b(neue anweisungen|nouvelles (instructions|consignes)|nuevas instrucciones|nuove istruzioni|"
        r"novas instruções|novas instrucoes|nieuwe instructies|nowe instrukcje)\s*:"
        r"|\b(ab jetzt|ab sofort|von nun an|désormais|dorénavant|à partir de maintenant|a partir de ahora|"
        r"de ahora en adelante|d'ora in poi|da ora in poi|a partir de agora|vanaf nu|od teraz|od tej chwili)\b"
        r"[^.!?\n]{0,60}\b(keine|aucune|ningun\w*|nessun\w*|nenhum\w*|geen|żadnych|sans|sin|senza|sem|ohne|zonder|"
        r"bez|ignor\w*|uneingeschränkt|illimit\w*|ilimitad\w*|gibst du alle|tout|todo|tutto)\b",
        0.85,
    ),
    _r(
        "roleplay_jailbreak",
        r"\b(keine|aucune|ningunas?|ningún|nessuna|nenhuma|geen|żadnych|kein)\s+(\w+\s+)?(regeln|richtlinien|"
        r"einschränkungen|grenzen|règles|restrictions|limites|reglas|restricciones|límites|regole|restrizioni|"
        r"limiti|regras|restrições|regels|beperkingen|zasad|ograniczeń)\b[^.!?\n]{0,30}\b(mehr|plus|más|più|mais|"
        r"meer|więcej|hast|has|hai|tens|hebt|masz|befolgst|sigues|segui|respectes|volgt)\b"
        r"|\b(du bist|tu es|eres|sei|você é|jij bent|jesteś) (jetzt|maintenant|ahora|ora|agora|nu|teraz)\s+"
        r"(\w+\s+)?(uneingeschränkt|sans limites|libre|ilimitad\w*|senza limiti|sem limites|onbeperkt|"
        r"nieograniczon\w*|frei|unzensiert)",
        0.9,
    ),
    _r(
        "disable_safety",
        r"\b(guidelines|rules|restrictions|policies|safety guidelines|richtlinien|sicherheitsrichtlinien|regeln|"
        r"linee guida|regole|règles|consignes|reglas|directrices|regras|diretrizes|regels|zasady)\b[^.!?\n]{0,40}"
        r"\b(don'?t|do not|no longer|nicht|non|ne s'appliquent pas|no se aplican|não se aplicam|niet|nie)\s+"
        r"(apply|gelten|mehr gelten|valgono|si applicano|s'appliquent|aplican|aplicam|gelden|obowiązują)\b",
        0.85,
    ),
)


_MORSE: Final = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g", "....": "h", "..": "i",
    ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n", "---": "o", ".--.": "p", "--.-": "q", ".-.": "r",
    "...": "s", "-": "t", "..-": "u", "...-": "v", ".--": "w", "-..-": "x", "-.--": "y", "--..": "z",
}  # fmt: skip


def _demorse(text: str) -> str:
    words = re.split(r"\s*/\s*|\s{3,}", text)
    return " ".join("".join(_MORSE.get(code, "") for code in word.split()) for word in words)


def _decodings(text: str) -> list[str]:
    """What an obfuscated attack could mean: base64/hex/URL-decoded pieces, rot13, spaced letters, reversed text,
    and the quoted pieces joined ("a = 'ignore all'; b = 'previous instructions'")."""
    out: list[str] = []
    for m in re.finditer(r"[A-Za-z0-9+/]{16,}={0,2}", text):
        chunk = m.group(0)
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() and sum(ch.isalpha() or ch == " " for ch in decoded) > 0.8 * len(decoded):
            out.append(decoded)
    for m in re.finditer(r"(?:[0-9a-fA-F]{2}[\s:]?){8,}", text):
        try:
            decoded = bytes.fromhex(re.sub(r"[\s:]", "", m.group(0))).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if decoded.isprintable():
            out.append(decoded)
    if "%" in text:
        out.append(urllib.parse.unquote(text))
    for m in re.finditer(r"[A-Z2-7]{16,}=*", text):
        try:
            decoded = base64.b32decode(m.group(0) + "=" * (-len(m.group(0)) % 8)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable():
            out.append(decoded)
    bits = re.findall(r"\b[01]{8}\b", text)
    if len(bits) >= 6:
        out.append("".join(chr(int(b, 2)) for b in bits))
    if "\\u" in text or "\\x" in text:
        out.append(
            re.sub(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
        )
    if "<~" in text and "~>" in text:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            out.append(base64.a85decode(text[text.index("<~") : text.index("~>") + 2], adobe=True).decode("utf-8"))
    for m in re.finditer(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{20,}", text):
        try:
            decoded = base64.b85decode(m.group(0)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if decoded.isprintable():
            out.append(decoded)
    morse = re.findall(r"[.\-]{1,6}(?:\s|/|$)", text)
    if len(morse) >= 8:
        out.append(_demorse(text))
    if re.search(r"rot[-_ ]?13|caesar|shift(ed)? by", text, re.I) or len(text) < 400:
        out.append(codecs.decode(text, "rot13"))
    spaced = re.sub(r"\b(\w) (?=\w\b)", r"\1", text)  # "I g n o r e" -> "Ignore"
    if spaced != text:
        out.append(re.sub(r" {2,}", " ", spaced))
    out.append(text[::-1])
    quoted = re.findall(r"[\"'“‘]([^\"'”’\n]{1,80})[\"'”’]", text)
    if len(quoted) >= 2:
        out.append(" ".join(quoted))
    words = re.findall(r"\b(?:first|second|third|fourth|fifth|sixth|next|last|\d+(?:st|nd|rd|th)?)\s*(?:word|part)?"
                       r"\s*[:=]\s*(\w+)", text, re.I)  # fmt: skip
    if len(words) >= 3:
        out.append(" ".join(words))
    return out


_DECODED_PREFILTER: Final = re.compile(
    r"instruc|prompt|rule|system|ignor|disregard|forget|reveal|disable|filter|mode\b|persona|restrict|secret|"
    r"password|api.?key|tenant|assistant|\bai\b|model|consign|anweis|istruz|regel|regla|regol|regra|vergiss|"
    r"oubli|olvid|dimentic|decode|execute|follow|obey|send|jailbr|\bdan\b|pretend|override|bypass|unrestrict|"
    r"censor|polic|guideline|admin|developer|token|credential|\bnew\b|neue|nouvel|nuev|nuov|nova",
    re.I,
)


def rule_hits(text: str) -> list[Rule]:
    """Rules that fire on the text, its leetspeak folding, or one of its decodings (each rule once)."""
    variants = [text]
    folded = text.translate(_LEET)
    if folded != text:
        variants.append(folded)
    hits: list[Rule] = []
    seen: set[str] = set()
    for r in RULES:
        if r.name not in seen and any(r.pattern.search(v) for v in variants):
            hits.append(r)
            seen.add(r.name)
    for decoded in _decodings(text):
        if not _DECODED_PREFILTER.search(decoded):
            continue  # reversed and rot13 views of ordinary text are noise: skip the rules on them
        for r in RULES:
            if r.name not in seen and r.name != "decode_and_follow" and r.pattern.search(decoded):
                hits.append(Rule(f"{r.name}@decoded", r.pattern, r.score))
                seen.add(r.name)
    return hits


ATTACK_CUE: Final = re.compile(
    r"\b(your|the assistant'?s?|the model'?s?|the bot'?s?|previous|prior|above|earlier|hidden|initial|original|"
    r"developer|secret|internal|operator'?s?)\s+(\w+\s+)?(instructions?|prompts?|rules|guidelines|restrictions|"
    r"filters?|programming|directives|configuration|polic(y|ies)|guardrails|safeguards|system message)\b"
    r"|\b(jailbr\w*|unrestricted|uncensored|unfiltered|no (rules|restrictions|limits|filters|guidelines)|"
    r"developer mode|do anything now|api[ _-]?keys?|credentials|other (customers|tenants|users)|"
    r"system ?prompt|systemanweisung\w*|anweisungen|consignes|instrucciones|istruzioni|instruções|instructies|"
    r"instrukcje|richtlinien|filtres|filtros|filtri|pii masking|safety (filters?|checks?|guidelines))\b",
    re.I,
)
"""Words an injection needs in order to act on the assistant; a model score without one can only flag."""


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """``score`` is on the calibrated scale: 0.5 is where the policy blocks by default."""

    score: float
    model_score: float
    reasons: list[str]


class InjectionDetector:
    """Score = strongest rule, else the model's calibrated score (capped in the flag band without an attack cue)."""

    def __init__(self, model: LinearTextModel | None) -> None:
        self.model = model

    def check(self, text: str) -> InjectionResult:
        hits = rule_hits(text)
        reasons = [f"rule:{r.name}" for r in hits]
        model_score = self.model.calibrated(text) if self.model is not None else 0.0
        cue = ATTACK_CUE.search(text)
        confident = model_score >= MODEL_BLOCK_NO_CUE or (cue is not None and model_score >= MODEL_BLOCK_SCORE)
        gated = model_score if confident else min(model_score, UNCAPPED_MODEL_SCORE)
        if self.model is not None and model_score >= 0.5:
            feats = ",".join(f.split(":", 1)[1].strip() for f in self.model.top_features(text))
            where = f"cue={cue.group(0).lower()}" if cue is not None else "no_cue"
            reasons.append(f"model:{model_score:.2f}[{feats}|{where}]")
        score = max([gated, *(r.score for r in hits)])
        return InjectionResult(score=score, model_score=model_score, reasons=reasons)


_lock = threading.Lock()
_detector: InjectionDetector | None = None


def load_model() -> LinearTextModel:
    """Shipped artifact first; else one trained earlier on this machine; else train now (seconds) and cache it."""
    for path in (MODEL_PATH, CACHE_PATH):
        if path.exists():
            return LinearTextModel.load(path)
    from processors.guardrails.injection_train import train_default

    model = train_default()
    model.save(CACHE_PATH)
    return model


def get_injection_detector() -> InjectionDetector:
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                _detector = InjectionDetector(load_model())
    return _detector
