"""Text helpers the synthesis recipes share. Pure logic."""

from __future__ import annotations

# English function words (NLTK's English list, the contractions' fragments included): they
# carry no topic, so a retrieval check ignores them and a prompt made only of them says nothing.
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until while of at by for with
about against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only own
same so than too very s t can will just don should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven
isn ma mightn mustn needn shan shouldn wasn weren won wouldn could would shall may might must please yes
""".split())
