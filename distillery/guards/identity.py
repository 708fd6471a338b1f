"""Identity leaks in assistant answers: a student trained on a teacher's answers learns to say it
is the teacher ("I am ChatGPT, trained by OpenAI"). Pure logic (stdlib only).

Tulu 3 dropped responses that name models or their developers; a keyword filter like that also
drops "OpenAI released ChatGPT in 2022", Claude Monet and llamas. Here a leak is a first-person
claim, in English, Chinese, Spanish, French, German, Italian, Portuguese, Russian and Japanese:
- identity_claim: to be a vendor's model ("I'm Claude", "My name is Qwen", "As ChatGPT, I"), to be
  made, trained or developed by a vendor ("I was trained by OpenAI", "My creators at Google",
  "Ich bin ein von Google trainiertes Sprachmodell"), or to be based on its model ("powered by GPT-4");
- vendor_policy: a refusal that gives a vendor's policy as its reason ("against OpenAI's use case policy");
- cutoff_claim: the speaker's own knowledge cutoff ("as of my last update in 2023");
- ai_boilerplate (a flag, never a reject): "As an AI language model", "I'm just an AI".

Not a leak: third-person facts; fenced and inline code; quoted speech ("...", “...”, «...», 「...」,
'...', > blockquotes; a quoted single token such as "ChatGPT" is a name, not speech); answers to
prompts that ask for role-play, fiction, text in the user's own voice ("write my bio") or a
translation of the user's text; negated, hypothetical or reported claims ("I'm not made by OpenAI",
"people think I'm ChatGPT", "it says: ..."); and the student's own name and maker. Employment is no
identity: "I work at Google" and "I'm an engineer at Meta" are what a user's bio says, not a model
naming its maker; only being a model, or being made by a vendor, counts.

Names that are ordinary words (Gemini, Llama, Bard, Pi, Falcon, Mistral...) are a claim only with AI
context near them (an AI noun, another vendor, "how can I help") and without an article ("I'm a
Gemini" is a star sign). First names (Claude, Kimi, Gemma, Ernie) are a claim also when the claim
ends the sentence ("I am Claude.") or the prompt asks who the assistant is, unless a human role is
near ("Je suis Claude, votre guide"). A surname ends any claim ("I'm Claude Monet"); a version makes
any name a model ("Llama 3", "Phi-3").

Speed: 3,000-5,000 answers of 1 KB a second on one core for ordinary answers (self-instruct seed
outputs, plain dev answers in nine languages), about 1,000 when every answer is full of vendor names
and claims; compiling the patterns takes ~0.2 s once per (vendors, name, maker). Answers are folded
and lower-cased once by 1:1 character maps (so a match's offsets are the input's); patterns run
without IGNORECASE and without leading lookbehinds (those make the regex engine try every position);
identity and policy patterns run only where a vendor name occurs (one that starts with a name only
at those positions), a language's patterns only where its script or function words occur, cutoff
patterns only near a year or a cue word. No pattern backtracks badly: 100 KB of quotes, vendor names
or "I am " takes under 0.1 s.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

REJECT_REASONS = ("identity_claim", "vendor_policy", "cutoff_claim")
FLAG_REASONS = ("ai_boilerplate",)
_RANK = {r: i for i, r in enumerate(REJECT_REASONS + FLAG_REASONS)}

DEFAULT_VENDORS: tuple[str, ...] = (
    "OpenAI", "ChatGPT", "GPT-3", "GPT-3.5", "GPT-4", "GPT-4o", "GPT-4.1", "GPT-4.5", "GPT-5", "InstructGPT",
    "Anthropic", "Claude", "Google", "Google DeepMind", "DeepMind", "Gemini", "Bard", "PaLM", "Gemma",
    "Meta", "Meta AI", "Llama", "LLaMA", "Mistral", "Mistral AI", "Mixtral", "Qwen", "Alibaba", "Alibaba Cloud",
    "Tongyi", "Tongyi Qianwen", "DeepSeek", "Microsoft", "Copilot", "Bing", "Phi", "xAI", "Grok", "Cohere",
    "Command R", "Command R+", "SmolLM", "Hugging Face", "Zephyr", "Falcon", "TII", "Baidu", "ERNIE", "Moonshot",
    "Kimi", "Zhipu", "GLM", "ChatGLM", "Yi", "01.AI", "IBM", "IBM Granite", "Granite", "Amazon", "Nova", "Titan",
    "Nvidia", "Nemotron", "AI21", "Jurassic", "Jamba", "Inflection", "Pi", "Perplexity", "Vicuna", "Alpaca",
    "ByteDance", "Doubao", "MiniMax", "Baichuan", "InternLM", "YandexGPT", "GigaChat",
    "文心一言", "通义千问", "通义", "豆包", "谷歌", "微软", "百度", "阿里巴巴", "阿里云", "深度求索", "智谱", "月之暗面", "字节跳动",
)
# Names that are also ordinary words (a claim needs AI context) or first names (a bare claim will do).
_COMMON = frozenset("gemini llama bard palm meta phi pi yi nova titan falcon alpaca vicuna copilot grok mistral jamba "
                    "jurassic amazon zephyr inflection perplexity moonshot granite bing tii".split())
_PERSON = frozenset("claude kimi gemma ernie".split())


@dataclass(frozen=True)
class IdentityHit:
    reason: str  # one of REJECT_REASONS or FLAG_REASONS
    matched: str  # the matched span exactly as it appears in the input text
    language: str  # en, zh, es, fr, de, it, pt, ru, ja


# ---- folding: one character for one, so offsets in the folded text are offsets in the input

def _fold_table() -> dict[int, str]:
    """Accented Latin to its base letter, full-width ASCII to ASCII, curly quotes to straight, ё to е."""
    table = {}
    for cp in range(0xC0, 0x250):
        base = unicodedata.normalize("NFD", chr(cp))[0]
        if base != chr(cp) and base.isascii():
            table[cp] = base
    table.update({cp: chr(cp - 0xFEE0) for cp in range(0xFF01, 0xFF5F)})
    table.update({0x451: "е", 0x401: "Е", 0x3000: " ", 0xA0: " ", 0x2019: "'", 0x2018: "'", 0x201B: "'",
                  0x2032: "'", 0x201C: '"', 0x201D: '"', 0x201E: '"', 0x2010: "-", 0x2011: "-"})
    return table


def _lower_table() -> dict[int, str]:
    """Folding, then lower case where that stays one character ("İ" does not)."""
    table = dict(_FOLD)
    for cp in [*range(0x41, 0x5B), *range(0xC0, 0x250), *range(0x370, 0x530), *range(0x1E00, 0x1F00), *range(0xFF21, 0xFF3B)]:
        low = table.get(cp, chr(cp)).lower()
        if len(low) == 1 and low != chr(cp):
            table[cp] = low
    return table


_FOLD = _fold_table()
_LOWER = _lower_table()


def _lower_rx(pattern: str) -> re.Pattern:
    """A pattern for lower-cased text: its letters lower-cased, not its escapes (\\W) or group names. Without
    IGNORECASE the regex engine skips ahead to a pattern's first letters: a search is many times faster."""
    return re.compile(re.sub(r"\\.|\(\?P<|[^\\(]+|\(", lambda m: m.group() if m.group()[0] in "\\(" else m.group().lower(), pattern))


# ---- what words mean (these run on small windows of the folded text, either case)

_I = re.IGNORECASE
_AI_NOUN = (r"(?:AI|A\.I\.|artificial intelligence|(?:large |small )?language models?|LLMs?|models?|assistants?|chat ?bots?|bots?|"
            r"systems?|programs?|agents?|versions?|variants?|iterations?|products?|creations?|neural networks?|companions?|"
            r"instances?|IA|inteligencia artificial|intelligence artificielle|intelligenza artificiale|modelos?|modeles?|"
            r"modell[oi]|\w*modell|asistente|assistente|assistent\w*|KI|KI-\w+|sistema|systeme|programa|programme|programma|"
            r"ИИ|ИИ-\w+|модел\w*|ассистент\w*|помощник\w*|чат-бот\w*|нейросет\w*|人工智能|模型|助手|机器人|人工知能|モデル|"
            r"アシスタント|チャットボット)")
_AI_NOUN_RX = re.compile(r"(?<![A-Za-z])" + _AI_NOUN + r"(?![A-Za-z])", _I)
# After "I'm a/an/your <name>": an AI noun must follow ("I'm a Gemini" is a star sign, "I'm an OpenAI model" a claim).
_AI_HEAD = re.compile(r"[\s\-]*(?:[\w\-]+\s+)?(?:based\b|powered\b|" + _AI_NOUN + r"(?![A-Za-z]))", _I)
# After "I'm <name>": punctuation, a conjunction, an AI noun: not another word ("I'm Google certified", "Claude Monet").
_OK_TAIL = re.compile(
    r"'s\s+(?:[\w\-]+\s+)?" + _AI_NOUN + r"(?![A-Za-z])|\s*(?:[^\w\s'\-]|$)|\s*-\s|[\s\-]+(?:and|but|so|here|too|now|today|again|y|e|et|und|и|а|но)\b|[\s\-]*(?:based|powered)\b"
    r"|[\s\-]*" + _AI_NOUN + r"(?![A-Za-z])|\s*[，。！？、：；]|\s*(?:です|だ|と申します|といいます|でございます|という|と呼ばれ|として)"
    r"|\s+(?:kann|habe|bin|mochte|darf|muss|werde|gebe|verfuge|besitze)\s+ich\b|\s*の(?:AI|人工知能|モデル|アシスタント|"
    r"チャットボット|大規模)|\s*的?(?:AI|人工智能|模型|助手|语言模型|大模型|聊天机器人)|\s*由", _I)
_ENDS = re.compile(r"\s*(?:[.!?。！？]|$)")
_AS_ROLE = re.compile(r"\s*,?\s+as\s+(?:an?|the)\s+", _I)
_SURNAME = re.compile(r"\s+[A-Z][a-z]")
_AI_CTX = re.compile(
    r"(?-i:\bAI\b|\bA\.I\.|\bIA\b|\bKI\b|ИИ|\bLLM)|artificial intelligence|language model|chat ?bot|\bassistant|neural network|"
    r"machine learning|\b(?:open|open-weight|open-source|foundation|base|chat|instruct)\s+models?\b|(?:developed|created|made|"
    r"built|designed) by|trained (?:by|on)|training data|how (?:can|may) I (?:help|assist)|assist you|help you (?:with|today)|"
    r"personal (?:opinions|feelings|experiences)|inteligencia artificial|modelo de lenguaje|asistente|ayudarte|intelligence "
    r"artificielle|modele de langage|vous aider|t'aider|kunstliche intelligenz|sprachmodell|assistent|intelligenza artificiale|"
    r"modello (?:linguistico|di linguaggio)|assistente|aiutarti|modelo de linguagem|искусственн\w* интеллект|языков\w* модел|"
    r"ассистент|помощник|чат-бот|помочь|人工智能|语言模型|大模型|助手|聊天机器人|人工知能|言語モデル|アシスタント|チャットボット|"
    r"お手伝い|(?:creado|entrenado|desarrollado|cree|developpe|entraine|concu)\s+par?\b|entwickelt|trainiert|addestrat|sviluppat|"
    r"criado|desenvolvido|treinado|создан|разработан|обучен|开发|训练|開発|訓練", _I)
_HUMAN = re.compile(
    r"\b(?:painter|artist|composer|musician|singer|teacher|professor|chef|baker|student|doctor|nurse|guide|driver|engineer|"
    r"lawyer|farmer|writer|poet|years old|born in|I live in|I grew up|my (?:wife|husband|kids|children|son|daughter|mother|"
    r"father|parents|family)|peintre|compositeur|professeur|maler|komponist|lehrer|pittore|compositore|insegnante|pintor|"
    r"compositor|художник|композитор|учитель)\b", _I)
# In the clause before a claim: a belief, a condition or reported speech makes it no claim of the speaker's.
_BELIEF = re.compile(
    r"\b(?:think|thinks|thought|assum\w*|believ\w*|suppos\w*|claim\w*|mistak\w*|confus\w*|pretend\w*|imagin\w*|wish|if|whether|"
    r"unless|creen que|piensan que|crees que|si (?:yo )?(?:fuera|fuese)|pensent que|croient que|crois que|si je|denken|glauben|"
    r"meinen|wenn ich|ob ich|falls ich|pensano che|credono che|se (?:io )?fossi|acham que|pensam que|se eu|думают|считают|"
    r"если (?:бы )?я)\b|\b(?:says?|said|repl(?:y|ies|ied)|answer(?:s|ed)?|respond(?:s|ed)?|writes?|wrote|dice|dijo|responde|"
    r"respondio|dit|repond\w*|sagt|antwortet|risponde|diz|говорит|отвечает)\s*:|以为|认为|如果|假如|假设|要是|当成|当作|说：|回答：|もし", _I)
_CLAUSE_CUT = re.compile(r"[.!?;,\n。！？，]|\bbut\b", _I)
# Between "I am" and a maker ("I'm a large language model developed by Meta"): none of these, or it is another clause.
_GAP_BLACK = re.compile(
    r"\b(?:not|never|no|how|what|why|when|where|whether|if|because|about|like|than|by|it|its|they|them|their|he|she|his|her|you|"
    r"we|our|these|those|familiar|aware|sure|happy|glad|able|use|using|used|know|think|explain|compare|similar|unlike|fan|user|"
    r"customer|employee|engineer|researcher|intern|member|subscriber|supporter|advocate|critic|impressed|interested|excited|"
    r"curious|proud|inspired|working|talking|writing|reading|comparing|studying|testing|learning|nunca|cual|cuando|donde|porque|"
    r"sobre|usuario|cliente|empleado|ingeniero|miembro|ne|pas|jamais|comment|quand|parce|utilisateur|employe|ingenieur|membre|"
    r"nicht|kein\w*|nie|wie|dass|ob|wenn|weil|nutzer|kunde|mitarbeiter|mitglied|mai|dove|perche|utente|dipendente|nao|onde|"
    r"funcionario|engenheiro|не|никогда|как|что|когда|где|если|потому|пользователь|фанат|клиент|сотрудник|думаю)\b|n't|不|没|非|"
    r"知道|认为|觉得|听说|了解|介绍|关于|如何|怎么|什么|用户|粉丝|员工|喜欢|使用|こと|について|と思|知って|ファン|ユーザー|社員|使って|好き", _I)
_RELATIVE = re.compile(r",?\s*(?:that|which|who|que|qui|che|der|die|das|который|которая)\s*$", _I)
# A policy is a refusal's reason when a verb like these is just before it (or after, in Japanese) ...
_VIOLATE = re.compile(
    r"against|violat\w*|breach\w*|contrary to|compl(?:y|ies|iance) with|adhere to|abide by|follow\w*|bound by|accordance with|"
    r"in line with|conflict\w* with|inconsistent with|not (?:allowed|permitted)|prohibited by|restricted by|\bper\b|\bunder\b|"
    r"due to|because|\bsince\b|en contra|viola\w*|infring\w*|contravien\w*|segun|conforme|de acuerdo con|a l'encontre|contraire|"
    r"enfrein\w*|selon|gegen|verstoß\w*|widersprich\w*|verletz\w*|gemaß|entsprechend|contro|contrari\w*|infrang\w*|secondo|"
    r"contra|нарушает|нарушил\w*|противореч\w*|против|в соответствии|согласно|违反|违背|不符合|根据|按照|遵守|遵循", _I)
_VIOLATE_AFTER = re.compile(r"\s*(?:に違反|に反|により禁止|で禁止|に従|に基づ)")
# ... and the sentence (or the one before) declines; or the policy itself is what "does not allow me".
_REFUSAL = re.compile(
    r"(?-i:\bI)(?:\s+|')(?:can't|cannot|can not|won't|am unable|m unable|am not able|m not able|must decline|ll have to pass)|"
    r"\bsorry\b|\bapologi[sz]e|\bunfortunately|no puedo|lo siento|lamentablemente|je ne peux|desole|malheureusement|leider|"
    r"kann ich nicht|ich kann \w* ?nicht|es tut mir leid|non posso|mi dispiace|purtroppo|nao posso|desculpe|infelizmente|"
    r"не могу|извините|к сожалению|抱歉|对不起|无法|不能|申し訳|できません", _I)
_ME_AFTER = re.compile(
    r"\s*(?:(?:does not|doesn't|do not|don't|won't|wouldn't)\s+(?:allow|permit|let)\s+me|(?:prohibits|forbids|prevents|bars|"
    r"restricts|stops)\s+me|no me permit\w*|ne me permet|m'interdit|erlaubt mir nicht|verbietet mir|non mi (?:permette|consente)|"
    r"nao me permite|не позволя\w* мне|запреща\w* мне|不允许我|禁止我)", _I)
_SENTENCE = re.compile(r"[.!?。！？\n]")

# ---- what a prompt asks for (lower-cased)

# Role-play: every claim in the answer is the part the assistant was asked to play.
_ROLEPLAY = _lower_rx(
    r"pretend|\bact (?:as|like)\b|role[\s\-]?play|\bimagine (?:you|being|that you)|you(?:'re| are) now\b|from now on,? you|"
    r"play the (?:role|part)|in the role of|as if you were|impersonat|simulat|in character|(?:respond|answer|reply|speak) as\b|"
    r"talk like|(?:adopt|take on|assume) (?:the|a) persona|introduce yourself as|in the voice of|(?:from|in) the (?:perspective|"
    r"point of view) of|扮演|假装|假设你是|想象你是|角色扮演|模仿|以[^，。？！\n]{1,20}的(?:身份|口吻|语气)|你现在是|从现在开始你是|"
    r"\bfing[ea]s?\b|fingir|haz de cuenta|imagina que (?:eres|fueras)|act[uú]a como|interpreta (?:el papel|a)\b|juego de rol|"
    r"haz el papel|hazte pasar|como si fueras|ahora eres|fais semblant|faites semblant|imagine[sz]? que (?:tu|vous)|joue[zs]? le role|"
    r"incarne|jeu de role|agi(?:s|ssez) comme|comme si tu|tu es maintenant|tu so als|tue so als|stell dir vor|stellen sie sich vor|"
    r"spiel(?:e)? die rolle|rollenspiel|verhalte dich wie|als wa?rst du|du bist jetzt|fai finta|\bfingi\b|immagina di|gioco di ruolo|"
    r"recita la parte|comportati come|come se fossi|ora sei|\bfinja\b|faz de conta|imagine que (?:voce|tu)|aja como|atue como|"
    r"como se voce fosse|agora voce e|представь(?:те)?(?!ся)|притвор|сыграй|ролев|веди(?:те)? себя как|изобрази|как будто ты|"
    r"теперь ты|ふりをし|演じ|なりき|ロールプレイ|役になって|として振る舞|として答え|想像して")
# Fiction, or text in the user's own voice: its claims are a character's or the user's.
_CREATIVE = _lower_rx(
    r"(?:write|draft|compose|create)\b[^.?!\n]{0,40}\b(?:dialogue|dialog|conversation|script|scene|story|skit|screenplay|"
    r"transcript|poem|song|monologue|exchange)|(?:write|draft|compose|help me write)\b[^.?!\n]{0,60}\b(?:my (?:\w+ )?(?:bio|"
    r"profile|intro|introduction|summary|resume|cv|cover letter|post|tweet)|(?:bio|profile|intro|introduction|summary)\b"
    r"[^.?!\n]{0,20}\bfor me|on my behalf|from my (?:perspective|point of view))|写一[段个篇](?:对话|剧本|故事)|"
    r"escribe un (?:dialogo|guion|cuento|relato)|ecri(?:s|vez) une? (?:dialogue|scenario|script|histoire|recit|scene|conversation)|"
    r"schreib\w* (?:einen|ein|eine) (?:dialog|gesprach|geschichte|drehbuch|szene)|scrivi un\w* (?:dialogo|copione|racconto|storia|"
    r"conversazione|scena)|escreva um\w* (?:dialogo|roteiro|conto|historia|conversa|cena)|напиши (?:диалог|сценарий|рассказ|"
    r"историю|сцену)|(?:会話|対話|物語|台本|シナリオ)を書")
# Text handed over to translate, correct or repeat (it follows the request): its claims are the user's.
_TRANSFORM = _lower_rx(
    r"(?:\btranslat\w*|\b(?:correct|fix|check)\b[^.?!\n]{0,30}\b(?:grammar|spelling|typos?)|\b(?:rewrite|rephrase|paraphrase|"
    r"proofread|reword|repeat)\b|traduc\w*|traduis|ubersetz\w*|traduz\w*|перевед\w*|翻译|翻訳|corrige\w*|korrigier\w*|correggi|"
    r"исправь|改写|润色)[^\n:]{0,60}?[:\n\"“«「']")
# Who the assistant is: a bare "I'm Claude." answering that is a claim.
_ASKS = _lower_rx(
    r"\bwho\s+(?:are|r)\s+(?:you|u)\b|\bwhat(?:'s|\s+is)\s+your\s+name|\bwho\s+(?:made|created|built|trained|developed|designed)"
    r"\s+you|\bwhat\s+(?:ai|model|llm|kind of \w+)\s+are\s+you|\bare\s+you\s+(?:an?\s+)?(?:ai|bot|robot|human|person|real)|"
    r"\bintroduce\s+yourself|\btell\s+me\s+about\s+yourself|\bwho\s+is\s+this\b|quien\s+eres|como\s+te\s+llamas|quien\s+te\s+|"
    r"qui\s+es[\s\-]tu|qui\s+etes[\s\-]vous|comment\s+(?:tu\s+)?t'appelles|comment\s+vous\s+appelez|qui\s+t'a|presente[\s\-]toi|"
    r"wer\s+bist\s+du|wie\s+heißt\s+du|wer\s+hat\s+dich|chi\s+sei|come\s+ti\s+chiami|chi\s+ti\s+ha|presentati|quem\s+(?:e|es)\s+"
    r"(?:voce|tu)|como\s+voce\s+se\s+chama|o\s+seu\s+nome|quem\s+te\s+|кто\s+ты|как\s+тебя\s+зовут|кто\s+тебя|представься|"
    r"你是谁|你叫什么|谁(?:开发|创造|训练|制作)了你|你是什么模型|介绍一下你自己|あなたは誰|お名前|誰が|自己紹介")


@lru_cache(maxsize=4096)
def _prompt_kind(prompt: str) -> tuple[bool | str, bool]:
    """(True for role-play, "voiced" for fiction or the user's own text, else False; whether the prompt asks who
    the assistant is). Cached: a build asks several teachers, or samples several answers, per prompt."""
    low = prompt.translate(_LOWER)
    if _ROLEPLAY.search(low):
        return True, False
    voiced = _CREATIVE.search(low) is not None or _TRANSFORM.search(low) is not None
    return ("voiced" if voiced else False), _ASKS.search(low) is not None


# ---- the claims, per language

# Fragments of the patterns below; {V} is a vendor name (group v) and its version (group ver).
_FRAG = {
    "MK": r"(?:made|created|built|trained|pre-?trained|fine-?tuned|developed|designed|programmed|engineered|produced|released|"
          r"launched|owned|maintained|coded)",
    "WHO": r"(?:(?:a|the)\s+)?(?:(?:team|teams|group|researchers|engineers|folks|people|developers|scientists|staff)\s+(?:of\s+"
           r"(?:researchers|engineers|developers|scientists)\s+)?(?:at|of|from)\s+)?",
    "MKES": r"(?:cread|desarrollad|entrenad|disenad|construid|programad|hech|ajustad|lanzad|producid)[oa]s?",
    "MKFR": r"(?:cree|developpe|entraine|concu|forme|construit|programme|fabrique|cree et entraine)e?s?",
    "MKDE": r"(?:entwickelt|trainiert|erstellt|erschaffen|gebaut|programmiert|geschaffen|konzipiert|entworfen|gemacht|feinabgestimmt)\w*",
    "MKIT": r"(?:addestrat|creat|sviluppat|progettat|costruit|realizzat|programmat|fatt)[oa]",
    "MKPT": r"(?:criad|desenvolvid|treinad|projetad|construid|programad|feit|lancad)[oa]",
    "MKRU": r"(?:создан|разработан|обучен|натренирован|спроектирован|построен|сделан)(?:[аоы]|н\w*)?",
    "MKZH": r"(?:开发|训练|创建|打造|研发|设计|构建|推出|创造|制作|发布)",
    "MKJA": r"(?:開発|訓練|トレーニング|作成|構築|設計|学習|作ら|作っ)",
    "DATE": r"(?:(?:early|mid|late|the\s+(?:end|start|beginning|middle)\s+of|around|about|principios\s+de|finales\s+de|mediados\s+de|"
            r"debut|fin|anfang|mitte|ende|inizio|fine|meta|inicio|final|начала|конца|середины)[\s\-]+)?(?:[^\W\d_]+\.?\s+(?:de\s+|del\s+|"
            r"of\s+)?)?(?:19|20)\d\d|(?:my|mi|ma|mon|mein\w*|la\s+mia|il\s+mio|minha|meu|мо\w+)\s+(?:knowledge\s+|training\s+)?"
            r"(?:cut[\s\-]?off|last\s+update)",
    "START": r"(?:^|(?<=[.!?\n:;,(—–¡¿]))\s*",
}
# A version or model-size suffix after a vendor name: a name with one is always a model.
_VERSION = (r"(?P<ver>(?:[\s\-]?[a-z]{0,2}\d+(?:\.\d+)*[a-z]?(?![A-Za-z]))?(?:[\s\-](?:pro|ultra|flash|nano|sonnet|opus|haiku|"
            r"instant|turbo|max|plus|mini|chat|coder|instruct|large|small|medium|vision|lite|omni|preview|"
            r"\d+(?:\.\d+)*[bmk]?)(?![A-Za-z]))*)")
_BY = r"\s+(?:by|at)\s+{WHO}{V}"
# (language, reason, kind, pattern). Kinds: name ("I am X": X must name a model, see _name_claim), as ("As X, I"),
# answer (the whole answer is a name: a claim if the prompt asked), maker (X made me; a noun phrase np must hold an AI
# noun), policy (must be a refusal's reason), plain (no check). A leading {V} runs at each vendor name, \b after a
# non-letter, {START} at a clause's start, {SENT} at a sentence's start (after an interjection at most).
_SPECS = (
    ("en", "identity_claim", "name", r"\bI(?:'m|\s+am)\s+(?:(?:just|simply|actually|really|indeed|officially|now|also|literally|"
     r"basically|still|called|named|known\s+as)\s+)?(?:(?P<art>an?|the|your|one)\s+)?{V}"),
    ("en", "identity_claim", "name", r"{START}{V}\s+here(?=\s*[!.,:;—–-])"),
    ("en", "identity_claim", "name", r"\b(?:my\s+name\s+is|my\s+name's|(?:you\s+can\s+|please\s+)?call\s+me|I\s+go\s+by|I(?:'m|\s+am)"
     r"\s+(?:called|named|known\s+as))\s+(?:the\s+)?{V}"),
    ("en", "identity_claim", "name", r"\bI(?:'m|\s+am)\s+(?:\w+ly\s+)?(?:a|an|the|your)\s+(?P<np>[^.!?\n]{0,60}?)\s+(?:named|called|"
     r"known\s+as)\s+{V}"),
    ("en", "identity_claim", "as", r"{START}as\s+(?:(?P<art>an?|the|your)\s+)?{V}[^,.!?\n]{0,40}?,\s*(?:I|my|me)\b"),
    ("en", "identity_claim", "maker", r"\bI(?:'m|\s+am|\s+was|'ve\s+been|\s+have\s+been|\s+had\s+been)\s+(?:\w+ly\s+)?{MK}(?:\s*(?:,|and|&)"
     r"\s*(?:\w+ly\s+)?{MK})*" + _BY),
    ("en", "identity_claim", "maker", r"\bI(?:'m|\s+am)\s+(?:\w+ly\s+)?(?:a|an|the|one|your|part|just|only)\s+(?P<np>[^.!?\n]{0,70}?)"
     r"(?:\s*,\s*|\s+)(?:(?:that|which|who)\s+(?:was|were|is|has\s+been|have\s+been)\s+)?(?:(?:\w+ly\s+)?{MK}(?:\s*(?:,|and|&)\s*"
     r"{MK})*\s+(?:by|at|from)|from|by|of)\s+{WHO}{V}"),
    ("en", "identity_claim", "maker", r"{START}as\s+(?:an?|the|your)\s+(?P<np>[^,.!?\n]{0,50}?)\s+{MK}" + _BY),
    ("en", "identity_claim", "maker", r"{V}(?:'s)?(?:\s+(?:team|researchers|engineers|developers))?\s+(?:has\s+|have\s+|had\s+)?"
     r"(?:\w+ly\s+)?(?:made|created|built|trained|developed|designed|programmed|fine-?tuned|engineered)\s+me(?=\s*(?:[.,;:!?)]|$)|"
     r"\s+(?:to|using|with|on|from|as|in|at|and|for|specifically|primarily)\b)"),
    ("en", "identity_claim", "maker", r"\bmy\s+(?:creators?|developers?|makers?|trainers?|designers?|builders?|parent\s+company|original"
     r"\s+developers?|development\s+team|training\s+team)\s*(?:,|:|—|-)?\s*(?:(?:are|is|were|was|at|from|of|being)\s+)?(?:the\s+"
     r"(?:team|folks|people|engineers|researchers)\s+(?:at|of)\s+)?{V}"),
    ("en", "identity_claim", "maker", r"{V}\s+(?:is|was|are|were)\s+my\s+(?:creators?|developers?|makers?|parent\s+company|trainers?)\b"),
    ("en", "identity_claim", "maker", r"\b(?:company|team|organization|lab|people|folks)\s+(?:that|who|which)\s+(?:made|created|built|"
     r"trained|developed|designed)\s+me\s+(?:is|was|are|were)\s+{V}"),
    ("en", "identity_claim", "maker", r"{V}\s+(?:is|was)\s+the\s+(?:company|team|organization|lab)\s+(?:that|which|who)\s+(?:made|"
     r"created|built|trained|developed|designed)\s+me\b"),
    ("en", "identity_claim", "maker", r"\bI(?:'m|\s+am)\s+(?:\w+ly\s+)?(?:(?:a|an|the)\s+(?P<np>[^.!?\n]{0,40}?)\s+)?(?:based\s+on|built\s+on"
     r"(?:\s+top\s+of)?|powered\s+by|running\s+on|derived\s+from|fine-?tuned\s+from|a\s+(?:fine-?tuned\s+|distilled\s+)?version\s+of|"
     r"an\s+instance\s+of|a\s+variant\s+of|a\s+descendant\s+of)\s+(?:the\s+)?{V}"),
    ("en", "identity_claim", "maker", r"\b(?:I\s+run\s+on|I(?:'m|\s+am)\s+running\s+on|my\s+(?:underlying|base|foundation)\s+model\s+is|"
     r"my\s+architecture\s+is\s+based\s+on)\s+(?:the\s+)?{V}"),
    ("en", "identity_claim", "answer", r"^\W*(?:by\s+|it\s+was\s+|that\s+would\s+be\s+)?(?:the\s+)?{V}\W*$"),
    ("en", "vendor_policy", "policy", r"{V}(?:'s|s')?\s+(?:[\w\-]+\s+){0,3}?(?:policy|policies|guidelines|rules|terms(?:\s+of\s+(?:use|"
     r"service))?|standards|principles)\b"),
    ("en", "vendor_policy", "policy", r"\b(?:policy|policies|guidelines|rules|terms\s+of\s+(?:use|service))\s+(?:(?:set|established|laid"
     r"\s+out|defined|provided|written)\s+)?(?:by|of|from)\s+{V}"),
    ("en", "vendor_policy", "plain", r"\bmy\s+(?:guidelines|policies|rules|programming|instructions|principles)\s+(?:from|set\s+by|by|"
     r"at|established\s+by|provided\s+by)\s+{V}"),
    ("en", "cutoff_claim", "plain", r"\bmy\s+(?:knowledge|training(?:\s+data)?|data|information)(?:\s+base)?\s+cut[\s\-]?off\b"),
    ("en", "cutoff_claim", "plain", r"\bmy\s+(?:training(?:\s+data)?|knowledge|data)\s+(?:has|had)\s+an?\s+(?:\w+\s+)?cut[\s\-]?off\b"),
    ("en", "cutoff_claim", "plain", r"\bI\s+(?:have|'ve\s+got|had)\s+an?\s+(?:knowledge|training)(?:\s+data)?\s+cut[\s\-]?off\b"),
    ("en", "cutoff_claim", "plain", r"\bas\s+of\s+my\s+(?:last|latest|most\s+recent|final)\s+(?:knowledge\s+|training\s+|data\s+)?"
     r"(?:update|training|cut[\s\-]?off|refresh)\b"),
    ("en", "cutoff_claim", "plain", r"\bmy\s+training(?:\s+data)?\s*,?\s*(?:which\s+|that\s+)?(?:only\s+|currently\s+)?(?:goes|extends|"
     r"runs|reaches|stops|ends|covers(?:\s+events|\s+information)?|includes\s+(?:data|information|events))\s+(?:[\w\-]+\s+){0,2}?"
     r"(?:up\s+)?(?:to|until|till|through|in|at)\b"),
    ("en", "cutoff_claim", "plain", r"\bmy\s+(?:knowledge|information|data)(?:\s+base)?\s*,?\s*(?:which\s+|that\s+)?(?:is\s+|was\s+)?"
     r"(?:only\s+)?(?:goes|extends|runs|reaches|stops|ends|current|up[\s\-]to[\s\-]date|accurate|limited|updated|frozen|last\s+"
     r"updated)\s+(?:[\w\-]+\s+){0,4}?(?:up\s+)?(?:to|until|till|through|in|at|as\s+of|before)\s+{DATE}"),
    ("en", "cutoff_claim", "plain", r"\bI\s+(?:only\s+)?(?:have|possess)\s+(?:\w+\s+){0,2}?(?:information|data|knowledge)\s+(?:[\w\-]+\s+)"
     r"{0,3}?(?:up\s+to|until|till|through|as\s+of|from\s+before)\s+{DATE}"),
    ("en", "cutoff_claim", "plain", r"\bmy\s+(?:last\s+(?:knowledge\s+|training\s+|data\s+)?(?:update|refresh|training)\s+(?:was|is|"
     r"happened|occurred|took\s+place)|training\s+(?:ended|concluded|was\s+completed|stopped))\b"),
    ("en", "cutoff_claim", "plain", r"\bI\s+(?:was|have\s+been|am)\s+(?:last\s+)?(?:trained|updated)\s+(?:on\s+(?:data|information|text)"
     r"\s+)?(?:\w+\s+){0,2}?(?:up\s+)?(?:to|until|till|through|in|as\s+of)\s+{DATE}"),
    ("en", "cutoff_claim", "plain", r"\bI\s+(?:don't|do\s+not|can't|cannot|won't|have\s+no)\s+(?:have\s+|access\s+)?(?:any\s+)?"
     r"(?:information|data|knowledge|details|updates|access\s+to\s+(?:information|data|events|news))\s+(?:about\s+|on\s+)?(?:(?:events|"
     r"developments|anything|things)\s+(?:that\s+(?:happened|occurred)\s+)?)?(?:after|beyond|past|since|later\s+than)\s+{DATE}"),
    ("en", "cutoff_claim", "plain", r"\bI(?:'m|\s+am)\s+not\s+aware\s+of\s+(?:\w+\s+){0,4}?(?:after|beyond|since)\s+{DATE}"),
    ("en", "ai_boilerplate", "plain", r"\bas\s+an?\s+(?:AI|A\.I\.|artificial\s+intelligence|(?:large\s+)?language\s+model|LLM|chatbot|"
     r"virtual\s+assistant|digital\s+assistant|machine\s+learning\s+model|text-based\s+AI)\b"),
    ("en", "ai_boilerplate", "plain", r"\bI(?:'m|\s+am)\s+(?:just|only|merely|simply|but|nothing\s+more\s+than)\s+(?:an?\s+)?(?:AI|"
     r"artificial\s+intelligence|(?:large\s+)?language\s+model|computer\s+program|program|chatbot|machine|bot)\b"),
    ("en", "ai_boilerplate", "plain", r"\b(?:being|since\s+I(?:'m|\s+am)|because\s+I(?:'m|\s+am)|as\s+I(?:'m|\s+am))\s+an?\s+(?:AI|"
     r"artificial\s+intelligence|(?:large\s+)?language\s+model)\b"),
    ("en", "ai_boilerplate", "plain", r"\bI(?:'m|\s+am)\s+an?\s+(?:AI|artificial\s+intelligence|(?:large\s+)?language\s+model)(?:\s+\w+)?"
     r"\s*(?:,\s*|\s+)(?:and|so)\s+(?:I\s+)?(?:don't|do\s+not|can't|cannot|have\s+no|lack)\b"),
    # Chinese
    ("zh", "identity_claim", "name", r"我(?:其实|就|正|也|便|本)?(?:是|叫|名叫|叫做|的名字是|的名字叫)\s*(?P<art>一个|一款|一名|一种|个)?\s*{V}"),
    ("zh", "identity_claim", "as", r"作为(?P<art>一个|一款)?\s*{V}[^，,。！？\n]{0,12}?[，,]\s*我"),
    ("zh", "identity_claim", "maker", r"我(?P<gap>[^。！？\n]{0,20}?)(?:由|被)\s*{V}(?:公司|团队|的团队|的研究人员|的工程师)?\s*(?:所)?{MKZH}"),
    ("zh", "identity_claim", "maker", r"我是\s*{V}(?:公司|团队)?{MKZH}的"),
    ("zh", "identity_claim", "maker", r"作为(?P<gap>[^，,。！？\n]{0,10}?)(?:由)?\s*{V}(?:公司)?{MKZH}的"),
    ("zh", "identity_claim", "maker", r"{V}(?:公司|团队)?{MKZH}了我"),
    ("zh", "identity_claim", "maker", r"我的(?:开发者|创造者|创建者|开发团队|制造者|开发公司|训练者)(?:是|为)\s*{V}"),
    ("zh", "identity_claim", "maker", r"我(?:是)?(?:一个|一款)?(?:基于|建立在)\s*{V}"),
    ("zh", "vendor_policy", "policy", r"{V}(?:公司)?的(?:使用|内容|安全|用户|服务)?(?:政策|准则|规定|条款|规则|指南|协议)"),
    ("zh", "cutoff_claim", "plain", r"(?:截至|截止)(?:到)?我的(?:知识|训练数据|训练|信息)"),
    ("zh", "cutoff_claim", "plain", r"我的(?:知识|训练数据|训练|信息|数据)(?:库)?(?:只|仅)?(?:截止|截至|更新|停留|覆盖|涵盖|止于)"),
    ("zh", "cutoff_claim", "plain", r"(?:截至|截止)我(?:最后一次|上次|最近一次)(?:更新|训练)"),
    ("zh", "cutoff_claim", "plain", r"我(?:并)?(?:没有|无法获取|无法访问|不了解|不知道|无法得知|不掌握)[^。！？\n]{0,8}?\d{4}\s*年[^。！？\n]{0,8}?(?:之后|以后|后)的"),
    ("zh", "ai_boilerplate", "plain", r"作为(?:一个|一款|一名)?(?:AI|人工智能)(?:语言模型|助手|模型)?(?=\s*[，,]|\s*我)|作为(?:一个|一款)?(?:大型)?语言模型"),
    ("zh", "ai_boilerplate", "plain", r"我只是(?:一个)?(?:AI|人工智能|程序|语言模型)"),
    # Japanese
    ("ja", "identity_claim", "name", r"(?:私|わたし|僕|わたくし)(?:は|の名前は)(?P<gap>[^。！？\n]{0,30}?){V}(?=\s*(?:です|だ|と申します|といいます|"
     r"でございます|、|，|という|と呼ばれ|の(?:AI|人工知能|モデル|アシスタント|チャットボット|大規模)|[。！]|$))"),
    ("ja", "identity_claim", "name", r"{V}\s*(?:と申します|と呼んでください)"),
    ("ja", "identity_claim", "maker", r"(?:私|わたし|僕)(?:は|を)(?P<gap>[^。！？\n]{0,20}?){V}(?:社)?(?:の[^。！？\n]{0,10}?)?(?:によって|により|が|で)"
     r"\s*{MKJA}"),
    ("ja", "identity_claim", "maker", r"{SENT}{V}(?:社)?(?:によって|により|が){MKJA}"
     r"(?:され|し)た[^。！？\n]{0,20}?(?:AI|人工知能|モデル|アシスタント|チャットボット)(?:です|である|でございます)"),
    ("ja", "identity_claim", "maker", r"(?:私|わたし|僕)の(?:開発者|開発元|作成者|製作者|生みの親|開発会社)は\s*{V}"),
    ("ja", "identity_claim", "maker", r"(?:私|わたし|僕)は[^。！？\n]{0,15}?{V}(?:を|に)(?:ベース|基づ|基盤)"),
    ("ja", "vendor_policy", "policy", r"{V}(?:社)?の(?:利用|使用|コンテンツ|安全)?(?:ポリシー|ガイドライン|規約|方針)"),
    ("ja", "cutoff_claim", "plain", r"私の(?:知識|学習データ|トレーニングデータ|訓練データ)の?(?:カットオフ|締め切り|期限|最終更新)"),
    ("ja", "cutoff_claim", "plain", r"(?<!の)(?:私の)?(?:知識|学習データ|トレーニングデータ|訓練データ)は\s*\d{4}\s*年(?:\s*\d{1,2}\s*月)?(?:頃)?(?:まで|時点)"),
    ("ja", "cutoff_claim", "plain", r"\d{4}\s*年(?:\s*\d{1,2}\s*月)?(?:以降|より後|以後)の(?:情報|出来事|データ|ニュース|事柄)(?:は|には|について(?:は)?)?"
     r"\s*(?:持って|アクセスでき|知りません|わかりません|分かりません|把握して|含まれて)"),
    ("ja", "cutoff_claim", "plain", r"(?<!の)(?:私の)?最終(?:更新|アップデート|学習)(?:時点|の時点)"),
    ("ja", "ai_boilerplate", "plain", r"(?:AI|人工知能|言語モデル)(?:言語モデル|アシスタント|モデル)?として(?:、|，|私は)"),
    ("ja", "ai_boilerplate", "plain", r"(?:ただの|単なる)(?:AI|人工知能|プログラム|言語モデル)(?:です|なので|に過ぎ)"),
    # Spanish
    ("es", "identity_claim", "name", r"\b(?:yo\s+)?soy\s+(?:(?P<art>un|una|tu)\s+|(?:el|la)\s+)?{V}"),
    ("es", "identity_claim", "name", r"\b(?:me\s+llamo|mi\s+nombre\s+es|puedes\s+llamarme|llamame|me\s+puedes\s+llamar)\s+{V}"),
    ("es", "identity_claim", "as", r"{START}como\s+(?:(?P<art>un|una)\s+)?{V}[^,.!?\n]{0,40}?,"),
    ("es", "identity_claim", "maker", r"\b(?:fui|he\s+sido|soy|estoy)\s+(?:\w+mente\s+)?{MKES}\s+(?:por|en)\s+{WHO}{V}"),
    ("es", "identity_claim", "maker", r"\b(?:soy|como)\s+(?:un|una|el|la|tu)\s+(?P<np>[^.!?\n]{0,60}?)\s*,?\s*(?:(?:que\s+(?:fue|ha\s+sido)\s+)?"
     r"{MKES}\s+(?:por|en)|de|por)\s+{V}"),
    ("es", "identity_claim", "maker", r"{V}\s+me\s+(?:creo|desarrollo|entreno|diseno|construyo|programo)\b"),
    ("es", "identity_claim", "maker", r"\bmis\s+(?:creadores|desarrolladores)\s+(?:en|de|son)\s+{V}"),
    ("es", "identity_claim", "maker", r"\b(?:estoy|soy)\s+(?:un\s+modelo\s+)?(?:basad[oa]|construid[oa])\s+(?:en|sobre)\s+{V}"),
    ("es", "vendor_policy", "policy", r"\b(?:politicas?|normas|directrices|pautas|reglas|terminos|condiciones)(?:\s+de\s+(?:uso|contenido|"
     r"seguridad|servicio))?(?:\s+(?:establecidas|fijadas|definidas))?\s+(?:de|por)\s+{V}"),
    ("es", "cutoff_claim", "plain", r"\bmi\s+(?:fecha\s+(?:de\s+)?)?(?:corte|limite)\s+de\s+conocimientos?\b"),
    ("es", "cutoff_claim", "plain", r"\bmis?\s+conocimientos?\s+(?:solo\s+|solamente\s+|actuales\s+)?(?:llegan?|alcanzan?|abarcan?|se\s+"
     r"extienden?|estan?\s+actualizados?|se\s+limitan?|van)\s+(?:hasta|a)\b"),
    ("es", "cutoff_claim", "plain", r"\bmis\s+datos\s+de\s+entrenamiento\s+(?:solo\s+)?(?:llegan|van|abarcan|se\s+extienden|terminan)\b"),
    ("es", "cutoff_claim", "plain", r"\b(?:hasta|desde|segun|a\s+partir\s+de|en)\s+mi\s+ultima\s+actualizacion\b|\bmi\s+ultima\s+"
     r"actualizacion\s+(?:fue|es|de|data)\b"),
    ("es", "cutoff_claim", "plain", r"\bno\s+tengo\s+(?:acceso\s+a\s+)?(?:informacion|datos|conocimientos?)\s+(?:sobre\s+(?:eventos|"
     r"acontecimientos|hechos)\s+)?(?:posteriores?\s+a|despues\s+de|mas\s+alla\s+de)\s+{DATE}"),
    ("es", "ai_boilerplate", "plain", r"{START}como\s+(?:un|una)?\s*(?:modelo\s+de\s+(?:lenguaje|IA)|IA|inteligencia\s+artificial|asistente\s+"
     r"(?:de\s+IA|virtual))\b"),
    ("es", "ai_boilerplate", "plain", r"\b(?:(?:solo|solamente|simplemente)\s+soy|soy\s+(?:solo|solamente|simplemente))\s+una?\s+(?:IA|"
     r"inteligencia\s+artificial|programa|modelo)"),
    # French
    ("fr", "identity_claim", "name", r"\bje\s+suis\s+(?:(?P<art>un\s|une\s|votre\s|ton\s)\s*|(?:le\s|la\s|l')\s*)?{V}"),
    ("fr", "identity_claim", "name", r"\b(?:je\s+m'appelle|mon\s+nom\s+est|appelle[sz]?-moi|on\s+m'appelle)\s+{V}"),
    ("fr", "identity_claim", "as", r"\ben\s+tant\s+que\s+(?:(?P<art>un\s|une\s)\s*)?{V}[^,.!?\n]{0,40}?,\s*(?:je|j'|mon|ma|mes)"),
    ("fr", "identity_claim", "maker", r"\b(?:j'ai\s+ete|je\s+suis)\s+(?:\w+ment\s+)?{MKFR}\s+(?:par|chez)\s+{WHO}{V}"),
    ("fr", "identity_claim", "maker", r"\b(?:je\s+suis|en\s+tant\s+que?)\s+(?:un\s|une\s|le\s|la\s|l'|votre\s)\s*(?P<np>[^.!?\n]{0,60}?)\s*,?"
     r"\s*(?:(?:qui\s+a\s+ete\s+)?{MKFR}\s+(?:par|chez)|de|d'|par)\s*{V}"),
    ("fr", "identity_claim", "maker", r"{V}\s+m'a\s+(?:\w+ment\s+)?(?:cree|developpe|entraine|concu|forme|construit|programme)e?\b"),
    ("fr", "identity_claim", "maker", r"\bmes\s+(?:createurs|developpeurs|concepteurs)\s+(?:chez|de|d'|sont)\s*{V}"),
    ("fr", "identity_claim", "maker", r"\bje\s+suis\s+(?:un\s+modele\s+)?(?:base|fonde|construit)e?\s+sur\s+{V}"),
    ("fr", "vendor_policy", "policy", r"\b(?:politiques?|regles|directives|lignes\s+directrices|conditions|normes)(?:\s+(?:d'utilisation|"
     r"de\s+contenu|de\s+securite|d'usage))?\s+(?:de|d'|fixees\s+par|etablies\s+par)\s*{V}"),
    ("fr", "cutoff_claim", "plain", r"\bma\s+date\s+(?:de\s+)?(?:limite|coupure|fin)\s+(?:de\s+|des\s+)?connaissances?\b"),
    ("fr", "cutoff_claim", "plain", r"\bmes\s+connaissances\s+(?:s'arretent|vont\s+jusqu|datent|sont\s+limitees|se\s+limitent|remontent|"
     r"s'etendent\s+jusqu)"),
    ("fr", "cutoff_claim", "plain", r"\bmes\s+donnees\s+d'entrainement\s+(?:s'arretent|vont|remontent|se\s+limitent|couvrent|datent)"),
    ("fr", "cutoff_claim", "plain", r"\b(?:depuis|jusqu'a|lors\s+de|selon|a\s+la\s+date\s+de)\s+ma\s+derniere\s+mise\s+a\s+jour\b|\bma\s+"
     r"derniere\s+mise\s+a\s+jour\s+(?:date|remonte|etait|est|a\s+eu\s+lieu)"),
    ("fr", "cutoff_claim", "plain", r"\bje\s+n'ai\s+pas\s+(?:acces\s+aux?\s+|d'|de\s+)?(?:informations?|donnees|connaissances)\s+(?:sur\s+"
     r"les\s+evenements\s+)?(?:apres|au-dela\s+de|posterieures?\s+a)\s+{DATE}"),
    ("fr", "ai_boilerplate", "plain", r"\ben\s+tant\s+qu(?:e\s+|')(?:une?\s+)?(?:IA|intelligence\s+artificielle|modele\s+(?:de\s+langage|d'IA)|"
     r"assistant\s+(?:IA|virtuel|d'IA))\b"),
    ("fr", "ai_boilerplate", "plain", r"\bje\s+ne\s+suis\s+qu'une?\s+(?:IA|intelligence\s+artificielle|programme|modele)|\bje\s+suis\s+"
     r"(?:seulement|simplement|juste)\s+une?\s+(?:IA|intelligence\s+artificielle|programme)"),
    # German
    ("de", "identity_claim", "name", r"\bich\s+bin\s+(?:(?P<art>ein|eine|dein|Ihr)\s+|(?:der|die|das)\s+)?{V}"),
    ("de", "identity_claim", "name", r"\b(?:mein\s+Name\s+ist|ich\s+heiße|ich\s+heisse|nenn(?:e|en\s+Sie)?\s+mich)\s+{V}"),
    ("de", "identity_claim", "as", r"{START}als\s+(?:(?P<art>ein|eine)\s+)?{V}[^,.!?\n]{0,40}?\s+(?:kann|habe|bin|mochte|darf|muss|werde|"
     r"gebe|verfuge|besitze)\s+ich\b"),
    ("de", "identity_claim", "maker", r"\bich\s+(?:bin|wurde)\s+(?P<gap>[^.!?\n]{0,40}?)\bvon\s+{WHO}{V}(?:\s+\w+){0,3}?\s+{MKDE}"),
    ("de", "identity_claim", "maker", r"\bich\s+bin\s+(?:ein|eine|der|die|das|dein)\s+(?P<np>[^.!?\n]{0,50}?)(?:,?\s+(?:der|die|das)\s+)?"
     r"\s+(?:von|aus\s+dem\s+Hause)\s+{V}"),
    ("de", "identity_claim", "maker", r"{START}als\s+(?:ein\s+|eine\s+)?von\s+{V}\s+{MKDE}"),
    ("de", "identity_claim", "maker", r"{V}\s+hat\s+mich\s+(?:\w+\s+){0,3}?{MKDE}"),
    ("de", "identity_claim", "maker", r"\bmeine\s+(?:Entwickler|Schopfer|Erschaffer|Macher)\s+(?:bei|von|sind)\s+{V}"),
    ("de", "identity_claim", "maker", r"\bich\s+basiere\s+auf\s+{V}"),
    ("de", "vendor_policy", "policy", r"{V}(?:s|'s)?[\s\-]?(?:Nutzungsrichtlinien|Inhaltsrichtlinien|Richtlinien|Nutzungsbedingungen|"
     r"Regeln|Grundsatze|Policy|Policies)"),
    ("de", "vendor_policy", "policy", r"\b(?:Richtlinien|Nutzungsrichtlinien|Inhaltsrichtlinien|Nutzungsbedingungen|Regeln|Grundsatze)\s+"
     r"(?:von|der\s+Firma|des\s+Unternehmens)\s+{V}"),
    ("de", "cutoff_claim", "plain", r"\bmein\s+(?:Wissen|Wissensstand|Kenntnisstand|Trainingsstand|Datenstand)\s+(?:\w+\s+){0,2}?(?:reicht|"
     r"endet|geht|ist|stammt|basiert|bezieht\s+sich)\b[^.!?\n]{0,25}?\b(?:bis|vom|von|aus\s+dem\s+Jahr|auf\s+dem\s+Stand)\b"),
    ("de", "cutoff_claim", "plain", r"\bmeine\s+Trainingsdaten\s+(?:\w+\s+){0,2}?(?:reichen|gehen|enden|umfassen|stammen)\b"),
    ("de", "cutoff_claim", "plain", r"\b(?:Stand\s+meines\s+(?:Wissens|Trainings)|meinem\s+Wissensstand)\s*[(:,]?\s*(?:vom|von|im|aus)?\s*"
     r"{DATE}|\b(?:seit|nach)\s+meinem\s+letzten\s+(?:Update|Training)|\bmein\s+letztes\s+(?:Update|Training)\s+(?:war|ist|erfolgte)"),
    ("de", "cutoff_claim", "plain", r"\bich\s+habe\s+keine\s+(?:aktuellen\s+)?(?:Informationen|Daten|Kenntnisse)\s+(?:uber\s+(?:Ereignisse|"
     r"Entwicklungen)\s+)?(?:nach|seit|ab)\s+{DATE}"),
    ("de", "ai_boilerplate", "plain", r"{START}als\s+(?:eine?\s+)?(?:KI(?:-Sprachmodell|-Assistent|-Modell)?|kunstliche\s+Intelligenz|"
     r"Sprachmodell)\b"),
    ("de", "ai_boilerplate", "plain", r"\bich\s+bin\s+(?:nur|lediglich|bloß|bloss|einfach)\s+(?:eine?\s+)?(?:KI|kunstliche\s+Intelligenz|"
     r"Programm|Sprachmodell)"),
    # Italian ("sono" is also "they are": a claim starts a sentence or follows "io")
    ("it", "identity_claim", "name", r"\bio\s+sono\s+(?:(?P<art>un|una|uno|il\s+tuo)\s+|(?:il|lo|la)\s+|l')?{V}"),
    ("it", "identity_claim", "name", r"{START}(?:(?:ciao|salve|buongiorno)[!,.]?\s*)?sono\s+(?:(?P<art>un|una|uno|il\s+tuo)\s+|(?:il|lo|la)"
     r"\s+|l')?{V}"),
    ("it", "identity_claim", "name", r"\b(?:mi\s+chiamo|il\s+mio\s+nome\s+e|chiamami|puoi\s+chiamarmi)\s+{V}"),
    ("it", "identity_claim", "as", r"\bin\s+quanto\s+(?:(?P<art>un|una)\s+)?{V}[^,.!?\n]{0,40}?,"),
    ("it", "identity_claim", "maker", r"\b(?:sono\s+stat[oa]|vengo)\s+(?:\w+mente\s+)?{MKIT}\s+(?:da|presso)\s+{WHO}{V}"),
    ("it", "identity_claim", "maker", r"\b(?:sono|in\s+quanto)\s+(?:un|una|uno|il|l'|il\s+tuo)\s*(?P<np>[^.!?\n]{0,60}?)\s*,?\s*(?:(?:che\s+e\s+"
     r"stat[oa]\s+)?{MKIT}\s+(?:da|presso)|di)\s+{V}"),
    ("it", "identity_claim", "maker", r"{V}\s+mi\s+ha\s+{MKIT}"),
    ("it", "identity_claim", "maker", r"\bmi\s+ha(?:nno)?\s+{MKIT}\s+{V}"),
    ("it", "identity_claim", "maker", r"\bi\s+miei\s+(?:creatori|sviluppatori)\s+(?:di|presso|sono|in)\s+{V}"),
    ("it", "identity_claim", "maker", r"\bsono\s+basat[oa]\s+su\s+{V}"),
    ("it", "vendor_policy", "policy", r"\b(?:politica|politiche|linee\s+guida|norme|regole|termini)(?:\s+(?:di\s+utilizzo|d'uso|sui\s+"
     r"contenuti|di\s+contenuto|di\s+sicurezza))?\s+(?:di|da\s+parte\s+di|stabilite\s+da)\s+{V}"),
    ("it", "cutoff_claim", "plain", r"\bla\s+mia\s+data\s+(?:di\s+)?(?:limite|cutoff|taglio)|\bdata\s+(?:di\s+)?(?:limite|cutoff|taglio)\s+"
     r"delle\s+mie\s+conoscenze"),
    ("it", "cutoff_claim", "plain", r"\ble\s+mie\s+conoscenze\s+(?:si\s+fermano|arrivano|sono\s+aggiornate|sono\s+limitate|risalgono|vanno)"),
    ("it", "cutoff_claim", "plain", r"\bi\s+miei\s+dati\s+di\s+(?:addestramento|training)\s+(?:si\s+fermano|arrivano|vanno|risalgono|sono"
     r"\s+aggiornati)"),
    ("it", "cutoff_claim", "plain", r"\b(?:dal|al|fino\s+al|secondo\s+il|alla\s+data\s+del)\s+mio\s+ultimo\s+aggiornamento|\bil\s+mio\s+"
     r"ultimo\s+aggiornamento\s+(?:risale|e|era)\b"),
    ("it", "cutoff_claim", "plain", r"\bnon\s+ho\s+(?:accesso\s+a\s+)?informazioni\s+(?:su\s+(?:eventi|fatti)\s+)?(?:successiv[ei]|dopo|"
     r"oltre)\s+(?:a|al|il)?\s*{DATE}"),
    ("it", "ai_boilerplate", "plain", r"\bin\s+quanto\s+(?:un'?|una\s+|un\s+)?(?:IA|intelligenza\s+artificiale|modello\s+(?:linguistico|di"
     r"\s+(?:linguaggio|IA))|assistente\s+(?:virtuale|IA))"),
    ("it", "ai_boilerplate", "plain", r"{START}come\s+(?:un'?|una\s+|un\s+)?(?:IA|intelligenza\s+artificiale|modello\s+(?:linguistico|"
     r"di\s+(?:linguaggio|IA))|assistente\s+(?:virtuale|IA))\s*,"),
    ("it", "ai_boilerplate", "plain", r"\bsono\s+(?:solo|soltanto|semplicemente)\s+(?:un'?|una\s+|un\s+)(?:IA|intelligenza\s+artificiale|"
     r"programma|modello)"),
    # Portuguese ("o ChatGPT": Portuguese puts the article before a name)
    ("pt", "identity_claim", "name", r"\b(?:eu\s+)?sou\s+(?:(?P<art>um|uma|seu|sua)\s+|(?:o|a)\s+)?{V}"),
    ("pt", "identity_claim", "name", r"\b(?:me\s+chamo|meu\s+nome\s+e|pode\s+me\s+chamar\s+de|chame-me\s+de)\s+(?:o\s+|a\s+)?{V}"),
    ("pt", "identity_claim", "as", r"{START}como\s+(?:o\s+|a\s+)?{V}[^,.!?\n]{0,40}?,\s*(?:eu|nao|tenho|posso|sou|meu|minha)\b"),
    ("pt", "identity_claim", "maker", r"\b(?:fui|tenho\s+sido|sou)\s+(?:\w+mente\s+)?{MKPT}\s+(?:pel[oa]s?|por|na|no)\s+{WHO}{V}"),
    ("pt", "identity_claim", "maker", r"\b(?:sou|como)\s+(?:um|uma|o|a|seu|sua)\s+(?P<np>[^.!?\n]{0,60}?)\s*,?\s*(?:(?:que\s+foi\s+)?{MKPT}"
     r"\s+(?:pel[oa]s?|por)|d[aoe])\s+{V}"),
    ("pt", "identity_claim", "maker", r"{V}\s+me\s+(?:criou|desenvolveu|treinou|projetou|construiu|programou)"),
    ("pt", "identity_claim", "maker", r"\bmeus\s+(?:criadores|desenvolvedores)\s+(?:na|no|da|do|sao)\s+{V}"),
    ("pt", "identity_claim", "maker", r"\bsou\s+baseado\s+(?:no|na|em)\s+{V}"),
    ("pt", "vendor_policy", "policy", r"\b(?:politicas?|diretrizes|normas|regras|termos)(?:\s+de\s+(?:uso|conteudo|seguranca))?\s+"
     r"(?:d[aoe]s?|estabelecidas\s+pel[ao])\s+{V}"),
    ("pt", "cutoff_claim", "plain", r"\bminha\s+data\s+(?:de\s+)?(?:corte|limite)\s+(?:de|do)\s+conhecimento"),
    ("pt", "cutoff_claim", "plain", r"\bmeu\s+conhecimento\s+(?:\w+\s+){0,2}?(?:vai|chega|se\s+estende|e\s+limitado|esta\s+atualizado|"
     r"termina)\s+(?:\w+\s+)?ate\b"),
    ("pt", "cutoff_claim", "plain", r"\bmeus\s+dados\s+de\s+treinamento\s+(?:\w+\s+)?(?:vao|chegam|se\s+estendem|terminam|cobrem)"),
    ("pt", "cutoff_claim", "plain", r"\b(?:desde|ate|na|segundo)\s+(?:a\s+)?minha\s+ultima\s+atualizacao|\bminha\s+ultima\s+atualizacao\s+"
     r"(?:foi|e|ocorreu)"),
    ("pt", "cutoff_claim", "plain", r"\bnao\s+tenho\s+(?:acesso\s+a\s+)?informac(?:oes|ao)\s+(?:sobre\s+(?:eventos|acontecimentos)\s+)?"
     r"(?:apos|depois\s+de|posteriores\s+a|alem\s+de)\s+{DATE}"),
    ("pt", "ai_boilerplate", "plain", r"{START}como\s+(?:uma?\s+)?(?:IA|inteligencia\s+artificial|modelo\s+de\s+(?:linguagem|IA)|assistente\s+"
     r"(?:de\s+IA|virtual))\b"),
    ("pt", "ai_boilerplate", "plain", r"\bsou\s+(?:apenas|somente|simplesmente|so)\s+uma?\s+(?:IA|inteligencia\s+artificial|programa|modelo)"),
    # Russian (no copula: "Я — ChatGPT")
    ("ru", "identity_claim", "name", r"\bя\s*(?:[—–-]\s*|являюсь\s+|просто\s+)?{V}"),
    ("ru", "identity_claim", "name", r"\b(?:меня\s+зовут|мое\s+имя|можете\s+называть\s+меня|зови\s+меня)\s*(?:[—–-]\s*)?{V}"),
    ("ru", "identity_claim", "as", r"{START}как\s+{V}[^,.!?\n]{0,40}?,\s*я\b"),
    ("ru", "identity_claim", "maker", r"\bя\s+(?:был[аи]?\s+)?(?:\w+\s+)?{MKRU}\s+(?:компанией\s+|командой\s+|специалистами\s+|в\s+)?{V}"),
    ("ru", "identity_claim", "maker", r"\bя\s*(?:[—–-]\s*)?(?P<np>[^.!?\n]{0,50}?)\s*,?\s*(?:{MKRU}\s+(?:компанией\s+|командой\s+)?|от\s+|"
     r"компании\s+){V}"),
    ("ru", "identity_claim", "maker", r"{V}\s+(?:создал[аи]?|разработал[аи]?|обучил[аи]?)\s+меня"),
    ("ru", "identity_claim", "maker", r"\bменя\s+(?:создал[аи]?|разработал[аи]?|обучил[аи]?|сделал[аи]?)\s+(?:компания\s+|команда\s+)?{V}"),
    ("ru", "identity_claim", "maker", r"\bмои\s+(?:создатели|разработчики)\s+(?:из|в|—|-)?\s*{V}"),
    ("ru", "identity_claim", "maker", r"\bя\s+(?:основан[ао]?|построен[ао]?|базируюсь)\s+на\s+{V}"),
    ("ru", "vendor_policy", "policy", r"(?:политик\w*|правил\w*|принцип\w*|руководств\w*|услови\w*)(?:\s+(?:использования|контента|"
     r"безопасности))?\s+(?:компании\s+)?{V}"),
    ("ru", "cutoff_claim", "plain", r"\bмои\s+знания\s+(?:\w+\s+)?(?:ограничены|заканчиваются|актуальны|обрываются|доходят|охватывают)"),
    ("ru", "cutoff_claim", "plain", r"\b(?:дата|граница|порог|срез)\s+(?:отсечения\s+|окончания\s+|актуальности\s+)?моих\s+знаний|\bмо[йя]\s+"
     r"(?:дата|граница|порог|срез)\s+(?:отсечения\s+|окончания\s+)?знаний"),
    ("ru", "cutoff_claim", "plain", r"\b(?:на\s+момент|по\s+состоянию\s+на|с\s+момента)\s+(?:моего\s+|мое\s+)?последне(?:го|е)\s+обновлени[яе]"),
    ("ru", "cutoff_claim", "plain", r"\bмои\s+(?:обучающие\s+)?данные\s+(?:\w+\s+)?(?:заканчиваются|ограничены|охватывают|доходят)|"
     r"\bу\s+меня\s+нет\s+(?:актуальной\s+)?(?:информации|данных|сведений)\s+(?:о\s+событиях\s+)?(?:после|позже)\s+{DATE}"),
    ("ru", "ai_boilerplate", "plain", r"{START}как\s+(?:ИИ|искусственный\s+интеллект|языковая\s+модель|модель\s+ИИ|ИИ-ассистент)\b"),
    ("ru", "ai_boilerplate", "plain", r"\bя\s+(?:всего\s+лишь|лишь|просто|только)\s+(?:ИИ|искусственный\s+интеллект|программа|языковая\s+"
     r"модель|компьютерная\s+программа)"),
)

# ---- gates: cheap checks that let most answers skip most patterns

_SCRIPTS = {"zh": re.compile(r"[\u4e00-\u9fff]"), "ja": re.compile(r"[\u3040-\u30ff]"), "ru": re.compile(r"[\u0400-\u04ff]")}
_TOKEN = re.compile(r"[a-z]+")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# Function words of a Latin-script language (none that is also English): its patterns skip a long text without one.
_LANGUAGE = {k: frozenset(v.split()) for k, v in {
    "es": "el la los las que es soy fui mi de y estoy por con para un una del lo se como",
    "fr": "le la les des est et je une un du suis mes ma mon pas en au",
    "de": "der das und ist ich nicht ein eine mich mir mein meine wurde von zu mit es sie als",
    "it": "il di che sono un una del della mi io stato stata ho da con la le lo",
    "pt": "de que nao um uma sou eu da meu minha fui pelo pela por para com em na como"}.items()}
# First-person words: a language's cutoff and boilerplate patterns cannot match without one.
_MARKERS = {k: frozenset(v.split()) for k, v in {
    "es": "mi mis tengo como soy solo", "fr": "ma mes je tant", "de": "ich mein meine meines meinem als stand",
    "it": "mi mio mie miei ho quanto come sono", "pt": "meu minha meus tenho como sou"}.items()}
# A boilerplate pattern cannot match without an AI word (Chinese and Japanese: their script is gate enough).
_AI_WORDS = (" ai", "a.i.", " ia", "'ia", " ki", "ki-", "llm", "artifici", "kunstlich", "language model", "chatbot",
             "sprachmodell", "modelo", "modele", "modello", "program", "bot", "machine", "assistant", "asistente", "assistente",
             "assistent", "ии", "искусствен", "модел", "ассистент", "помощник")
# A cutoff pattern runs on the whole text when one of these that occurs in the pattern occurs in the text; else, if
# it holds a date, from 150 characters before each year to 60 after.
_YEAR = re.compile(r"(?:19|20)\d\d")
_CUES = {
    "en": ("cut", "as of my", "training", "last"), "es": ("corte", "conocimiento", "actualizacion", "entrenamiento"),
    "fr": ("connaissances", "mise a jour", "entrainement", "date limite"),
    "de": ("wissen", "trainingsdaten", "letzten update", "letztes update", "letzten training", "letztes training",
           "kenntnisstand", "trainingsstand", "datenstand"),
    "it": ("conoscenze", "aggiornamento", "addestramento", "data limite", "cutoff", "taglio"),
    "pt": ("conhecimento", "atualizacao", "treinamento"), "ru": ("знани", "обновлени", "данные"),
    "zh": ("知识", "训练", "更新", "截止", "截至"), "ja": ("知識", "学習", "データ", "最終", "カットオフ"),
}

# ---- compiled once per (vendors, name, maker)


@dataclass(frozen=True)
class _Spec:
    language: str
    reason: str
    kind: str
    rx: re.Pattern  # on the lower-cased text
    vendor: bool  # names a vendor
    at: str  # where a match may start: "vendor" (run at each vendor name), "word", "clause", "sentence" or ""
    dated: bool  # holds a year
    cues: tuple[str, ...]  # cutoff: its language's cue words that occur in it


@dataclass(frozen=True)
class _Compiled:
    groups: tuple[tuple[_Spec, ...], ...]  # run or skipped together: one language and reason, vendor or not, dated or not
    vendor: re.Pattern | None  # any vendor name, on the folded text (either case)
    scan: re.Pattern | None  # any vendor name, on the lower-cased text
    own: re.Pattern | None  # the student's own name and maker, on the lower-cased text
    firsts: frozenset[str]  # the first word of each vendor name: no scan where none occurs ...
    literals: tuple[str, ...]  # ... nor any of these (names that start with a digit, or are not Latin)


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.translate(_FOLD).lower())


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[\s\-_]+", name.translate(_LOWER).strip()) if p]


def _trie(names: list[str]) -> str:
    """One alternation for many names, shared prefixes factored out (twice as fast to scan as a flat one);
    a space or hyphen in a name matches a space, a hyphen, an underscore or nothing."""
    root: dict = {}
    for name in names:
        node = root
        for ch in " ".join(_parts(name)):
            node = node.setdefault(ch, {})
        node[""] = {}

    def rx(node: dict) -> str:
        alts = [(r"[\s\-_]?" if ch == " " else re.escape(ch)) + rx(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body
    return rx(root)


def _is_own(key: str, own: set[str]) -> bool:
    """The student's name or maker, or the name it versions ("SmolLM" for a student named "SmolLM2")."""
    return key in own or any(o.startswith(key) and re.fullmatch(r"v?\d[\w.]*|\d*(?:instruct|chat|base|it)", o[len(key):]) for o in own)


def _spec(language: str, reason: str, kind: str, pattern: str, frags: dict[str, str]) -> _Spec:
    at, vendor = "", "{V}" in pattern
    for mark, where in (("{V}", "vendor"), (r"\b", "word"), ("{START}", "clause"), ("{SENT}", "sentence")):
        if pattern.startswith(mark):
            at, pattern = where, pattern if where == "vendor" else pattern[len(mark):]
            break
    dated = "{DATE}" in pattern or r"\d{4}" in pattern
    words = re.sub(r"\\s[+*]?|\[\\s\\-\]\??", " ", pattern.lower())
    cues = tuple(w for w in _CUES.get(language, ()) if w in words) if reason == "cutoff_claim" else ()
    for k, v in frags.items():
        pattern = pattern.replace("{" + k + "}", v)
    return _Spec(language, reason, kind, _lower_rx(pattern), vendor, at, dated, cues)


def _first_words(names: list[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    firsts, literals = {"gpt"}, []
    for name in names:
        parts = _parts(name)
        letters = re.match(r"[a-z]+", parts[0])
        if letters and (letters.group() == parts[0] or len(letters.group()) > 2):
            firsts.add(letters.group())  # "qwen2" -> qwen
            if re.fullmatch(r"[a-z]+", "".join(parts)):
                firsts.add("".join(parts))  # "HuggingFace"
        else:
            literals.append(" ".join(parts))  # "01.ai", "ai21", "文心一言"
    return frozenset(firsts), tuple(literals)


@lru_cache(maxsize=64)
def _compiled(vendors: tuple[str, ...], name: str | None, maker: str | None) -> _Compiled:
    own_names = [x for x in (name, maker) if x and _key(x)]
    own = {_key(x) for x in own_names}
    kept = [v for v in dict.fromkeys(vendors) if _key(v) and not _is_own(_key(v), own)]
    alt = _trie(kept) if kept else r"(?!x)x"
    if any(_key(v).startswith("gpt") for v in kept):  # GPT-n for any n
        alt = r"gpt[\s\-]?\d+(?:\.\d+)?o?(?![a-z])|" + alt
    bounded = rf"(?<![a-z0-9])(?:{alt})(?![a-z])"
    frags = {**_FRAG, "V": rf"(?P<v>{bounded}){_VERSION}"}
    groups: dict[tuple, list[_Spec]] = {}
    for row in _SPECS:
        spec = _spec(*row, frags)
        groups.setdefault((spec.language, spec.reason, spec.vendor, spec.dated), []).append(spec)
    own_rx = re.compile("|".join(rf"(?<![a-z0-9]){_trie([x])}(?![a-z])" for x in own_names)) if own_names else None
    return _Compiled(tuple(tuple(g) for g in groups.values()), re.compile(bounded, _I) if kept else None,
                     re.compile(rf"(?:{alt})(?![a-z])") if kept else None, own_rx, *_first_words(kept))


# ---- code and quoted speech are blanked (same length) before matching

_CODE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`", re.S)
_QUOTED = re.compile(
    r'"([^"\n]{1,400}?)"|“([^”\n]{1,400}?)”|„([^“”\n]{1,400}?)[“”]|«([^»\n]{1,400}?)»|「([^」\n]{1,400}?)」'
    r"|『([^』\n]{1,400}?)』|＂([^＂\n]{1,400}?)＂|‘((?=\S)[^\n]{1,400}?(?<=\S))’(?!\w)")
_SINGLE = re.compile(r"'((?=\S)[^\n]{1,400}?(?<=\S))'(?!\w)")
_BLOCKQUOTE = re.compile(r"^[ \t]*>.*$", re.M)
# "User: ... / ChatGPT: ..." lines: a transcript is quoted speech (two speaker lines, one a chat role or a vendor).
_SPEAKER = re.compile(r"^[ \t]*[*_]{0,2}([^\W\d_][\w .'\-]{0,24}?)[*_]{0,2}[ \t]*[:：][*_]{0,2}[ \t]+(\S.*)$", re.M)
_ROLES = frozenset("user human assistant ai bot chatbot model customer agent client interviewer q a question answer me you "
                   "usuario utilisateur nutzer utente usuario пользователь ассистент 用户 助手 ユーザー アシスタント".split())
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
_SPEAKING_VENDORS = frozenset(_key(v) for v in DEFAULT_VENDORS)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """Spaces for the characters in spans (sorted, not overlapping), newlines kept."""
    pieces, pos = [], 0
    for s, e in spans:
        pieces += [text[pos:s], re.sub(r"[^\n]", " ", text[s:e])]
        pos = e
    return "".join(pieces) + text[pos:]


def _speech(inner: str) -> bool:
    """Quoted speech, not a quoted name ("ChatGPT", “通义千问”)."""
    return re.search(r"\s", inner) is not None or (_CJK.search(inner) is not None and len(inner) > 6)


def _quoted(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _QUOTED.finditer(text) if _speech(next(g for g in m.groups() if g is not None))]
    pos = text.find("'")
    while pos >= 0:  # an opening ' follows no letter ("I'm" opens nothing)
        m = None if pos and (text[pos - 1].isalnum() or text[pos - 1] in "'’") else _SINGLE.match(text, pos)
        if m is not None and _speech(m.group(1)):
            spans.append(m.span())
        pos = text.find("'", m.end() if m is not None else pos + 1)
    spans += [m.span() for m in _BLOCKQUOTE.finditer(text)] if ">" in text else []
    speakers = list(_SPEAKER.finditer(text)) if ":" in text or "：" in text else []
    if len(speakers) >= 2 and any(_key(m.group(1)) in _ROLES or _key(m.group(1)) in _SPEAKING_VENDORS for m in speakers):
        spans += [m.span(2) for m in speakers]
    return spans


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def _prepare(text: str) -> str:
    if "`" in text or "~~~" in text:
        text = _blank(text, [m.span() for m in _CODE.finditer(text)])
    return _blank(text, _merged(_quoted(text)))


# ---- is a match a claim?

def _believed(text: str, start: int) -> bool:
    """A belief, a condition or reported speech: "people think I'm ChatGPT", "if I were", "it says: I was ..."."""
    prefix = text[max(0, start - 60):start]
    cuts = [m.end() for m in _CLAUSE_CUT.finditer(prefix)]
    return _BELIEF.search(prefix[cuts[-1] if cuts else 0:]) is not None


def _ai_context(text: str, start: int, end: int, c: _Compiled) -> bool:
    """AI words near a claim, or a vendor that is not itself an ordinary word ("The falcon dove. I am Falcon")."""
    around = text[max(0, start - 160):start] + " | " + text[end:end + 200]
    if _AI_CTX.search(around):
        return True
    return c.vendor is not None and any(_key(v.group()) not in _COMMON | _PERSON for v in c.vendor.finditer(around))


def _np_ok(np: str, c: _Compiled) -> bool:
    """The noun phrase of "I'm <a large language model> developed by Meta": an AI noun, no other clause or vendor."""
    np = _RELATIVE.sub("", np)
    if _GAP_BLACK.search(np) or (c.vendor is not None and c.vendor.search(np)):
        return False
    return _AI_NOUN_RX.search(np) is not None


def _name_claim(m: re.Match, text: str, c: _Compiled, asks: bool, as_form: bool) -> bool:
    """Whether "I am X" ("My name is X", "As X, I") names a model, not a person, a star sign or an animal.
    Nobody called Claude says "As Claude, I ...": that form needs no context for a first name."""
    art, end = m.group("art") if "art" in m.re.groupindex else None, m.end("ver")
    if not (_AI_HEAD if art else _OK_TAIL).match(text, end):
        return False
    key = _key(m.group("v"))
    if (key not in _COMMON and key not in _PERSON) or re.search(r"\w", m.group("ver")):
        return True
    if (as_form and key in _PERSON) or _ai_context(text, m.start(), end, c):
        return True
    if art or _HUMAN.search(text, max(0, m.start() - 160), end + 200):
        return False
    bare = _ENDS.match(text, end) is not None
    return (asks or bare) if key in _PERSON else (asks and bare)


def _policy_context(text: str, m: re.Match) -> bool:
    """A vendor's policy given as a refusal's reason, not described as a fact."""
    s, e = m.start(), m.end()
    if _ME_AFTER.match(text, e):
        return True
    if not (_VIOLATE.search(text, max(0, s - 50), s) or _VIOLATE_AFTER.match(text, e)):
        return False
    ends = [x.end() for x in _SENTENCE.finditer(text, max(0, s - 400), s)]
    stop = _SENTENCE.search(text, e)
    return _REFUSAL.search(text, ends[-2] if len(ends) >= 2 else max(0, s - 400), stop.end() if stop else len(text)) is not None


def _valid(spec: _Spec, m: re.Match, text: str, c: _Compiled, asks: bool) -> bool:
    if spec.kind == "plain":
        return True
    if spec.kind == "policy":
        return _policy_context(text, m)
    if spec.kind == "answer":
        return asks
    groups = m.groupdict()
    if groups.get("np") is not None and not _np_ok(groups["np"], c):
        return False
    if groups.get("gap") and (_GAP_BLACK.search(groups["gap"]) or c.vendor.search(groups["gap"])):
        return False
    if _believed(text, m.start()):
        return False
    if spec.kind in ("name", "as"):
        return _name_claim(m, text, c, asks, spec.kind == "as")
    end = m.end("ver")
    role = _AS_ROLE.match(text, end)  # "trained by Google as a cloud architect": a person's training
    if role is not None and not _AI_NOUN_RX.search(text, role.end(), role.end() + 30):
        return False
    key = _key(groups["v"])  # only a name that is also a word or a first name needs care ("by Claude Monet")
    return key not in _PERSON and key not in _COMMON or not _SURNAME.match(text, end)


# ---- scanning

def _starts_ok(spec: _Spec, low: str, pos: int) -> bool:
    """The start conditions kept out of the patterns (a leading lookbehind makes a search many times slower)."""
    if spec.at == "word":
        return pos == 0 or not (low[pos - 1].isalnum() or low[pos - 1] == "_")
    if spec.at == "clause":
        head = low[:pos].rstrip(" \t")
        return not head or head[-1] in ".!?\n:;,(—–¡¿"
    if spec.at == "sentence":
        cut = max(low.rfind(ch, 0, pos) for ch in "。！？\n")
        return re.fullmatch(r"\s*(?:はい[、，,]?|こんにちは[！!。、]?)?\s*", low[cut + 1:pos]) is not None
    return True


def _first(spec: _Spec, text: str, low: str, where: list, c: _Compiled, asks: bool) -> re.Match | None:
    """The earliest valid match: at each vendor position for a pattern that starts with a vendor name, else by
    search in each (start, end) window."""
    if spec.at == "vendor":
        for pos in where:
            m = spec.rx.match(low, pos)
            if m is not None and _valid(spec, m, text, c, asks):
                return m
        return None
    for lo, hi in where:
        pos = lo
        while (m := spec.rx.search(low, pos, hi)) is not None:
            if _starts_ok(spec, low, m.start()) and _valid(spec, m, text, c, asks):
                return m
            pos = m.start() + 1
    return None


@dataclass
class _Text:
    """An answer as the scan sees it, with what the gates found in it (computed once, when first asked)."""
    text: str  # folded, code and quotes blanked
    low: str  # the same, lower-cased
    vendors: list[int]  # where vendor names start
    tokens: set[str]
    seen: dict


def _group_runs(spec: _Spec, t: _Text, roleplay: bool) -> bool:
    """Whether a group of patterns (see _Compiled.groups) could match this text at all."""
    if (spec.vendor and not t.vendors) or (roleplay and spec.reason in REJECT_REASONS):
        return False
    if spec.language not in t.seen:
        script = _SCRIPTS.get(spec.language)
        words = _LANGUAGE.get(spec.language)  # a short text may lack them, and is cheap
        t.seen[spec.language] = script.search(t.low) is not None if script else \
            not words or len(t.low) < 400 or not t.tokens.isdisjoint(words)
    if not t.seen[spec.language]:
        return False
    if spec.vendor:
        return True
    if spec.language in _MARKERS and t.tokens.isdisjoint(_MARKERS[spec.language]):
        return False
    if spec.reason == "ai_boilerplate" and spec.language not in _SCRIPTS:
        if "ai" not in t.seen:
            padded = " " + t.low.replace("\n", " ")
            t.seen["ai"] = any(w in padded for w in _AI_WORDS)
        return t.seen["ai"]
    return True


def _windows(spec: _Spec, t: _Text) -> list:
    if spec.at == "vendor":
        return t.vendors
    if spec.reason != "cutoff_claim" or spec.vendor or any(w in t.low for w in spec.cues):
        return [(0, len(t.low))]
    if not spec.dated:
        return []
    if "years" not in t.seen:
        t.seen["years"] = _merged([(max(0, m.start() - 150), m.end() + 60) for m in _YEAR.finditer(t.low)])
    return t.seen["years"]


def _read(c: _Compiled, response: str) -> _Text:
    text = _prepare(response)
    if not text.isascii():
        text = text.translate(_FOLD)
    low = text.lower()
    if len(low) != len(text):  # "İ" lower-cases to two characters: keep the offsets
        low = text.translate(_LOWER)
    if c.own is not None:  # the student's own name and maker are no claim
        own = [m.span() for m in c.own.finditer(low)]
        text, low = _blank(text, own), _blank(low, own)
    tokens = set(_TOKEN.findall(low))
    vendors = []
    if c.scan is not None and (not tokens.isdisjoint(c.firsts) or any(x in low for x in c.literals)):
        vendors = [m.start() for m in c.scan.finditer(low) if not (m.start() and low[m.start() - 1] in _ALNUM)]
    return _Text(text, low, vendors, tokens, {})


def _scan(c: _Compiled, response: str, prompt: str | None) -> list[IdentityHit]:
    t = _read(c, response)
    roleplay, asks = _prompt_kind(prompt or "")
    if roleplay == "voiced":  # fiction is a character's voice, unless the answer opens by declining to write it
        roleplay = _REFUSAL.search(t.text, 0, 160) is None and _ME_AFTER.search(t.text, 0, 160) is None
    best: dict[str, tuple[re.Match, str]] = {}
    for group in c.groups:
        if not _group_runs(group[0], t, roleplay):
            continue
        for spec in group:
            m = _first(spec, t.text, t.low, _windows(spec, t), c, asks)
            if m is not None and (spec.reason not in best or m.start() < best[spec.reason][0].start()):
                best[spec.reason] = (m, spec.language)
    hits = []
    for reason, (m, language) in best.items():
        span = response[m.start():m.end()]
        hits.append(IdentityHit(reason, max(span.split("\n"), key=len).strip(), language))
    return sorted(hits, key=lambda h: _RANK[h.reason])


# ---- the API

@dataclass(frozen=True)
class IdentityGuard:
    name: str | None = None  # the student's intended name: claiming it is never a leak
    maker: str | None = None  # the student's intended maker: likewise
    vendors: tuple[str, ...] = DEFAULT_VENDORS

    def __post_init__(self):
        if not isinstance(self.vendors, tuple):  # hashable, for the compiled-pattern cache
            object.__setattr__(self, "vendors", tuple(self.vendors))

    def check(self, response: str, prompt: str | None = None) -> list[IdentityHit]:
        """Leaks and flags in one answer, most severe first, one hit per reason (its earliest match).
        The prompt decides role-play, fiction and "who are you?" questions."""
        if not isinstance(response, str) or not response.strip():
            return []
        return _scan(_compiled(self.vendors, self.name, self.maker), response, prompt)

    def check_messages(self, messages: list[dict]) -> list[IdentityHit]:
        """Assistant turns only ({'role','content'} dicts), each with the user turn before it as its prompt."""
        return [hit for prompt, text in assistant_texts(messages) for hit in self.check(text, prompt)]


def _content(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):  # OpenAI-style parts: [{"type": "text", "text": ...}]
        return "\n".join(p if isinstance(p, str) else str(p.get("text") or "") for p in value if isinstance(p, (str, dict)))
    return "" if value is None else str(value)


def assistant_texts(value) -> list[tuple[str | None, str]]:
    """(prompt, assistant text) pairs from a column value: a plain string -> [(None, value)];
    a list of {'role','content'} messages -> each assistant turn with the user turn before it;
    None -> []. ShareGPT's {'from','value'} turns (human/gpt) are read the same way."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return [(None, str(value))]
    pairs, prompt = [], None
    for msg in value:
        if not isinstance(msg, dict):
            continue
        role, text = msg.get("role", msg.get("from")), _content(msg.get("content", msg.get("value")))
        if role in ("user", "human"):
            prompt = text
        elif role in ("assistant", "gpt", "model", "bot") and text:
            pairs.append((prompt, text))
    return pairs
