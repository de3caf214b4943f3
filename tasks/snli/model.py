"""The SNLI model of Niculae & Blondel (2017, §6.1), after Martins & Astudillo (2016) and Rocktäschel et al. (2016).

    premise    p_1..p_m --GRU--> Y = (y_1..y_m), final state y_m
    hypothesis h_1..h_n --GRU, initial state y_m (conditional encoding)--> final state h_N
    scores     s_t = w^T tanh(W_y y_t + W_h h_N)                 (t over the premise, padding masked)
    attention  a = Π(s)  (softmax / sparsemax / fusedmax / oscarmax: the configured mapping)
    r = Σ_t a_t y_t,   h* = tanh(W_p r + W_x h_N),   logits = W_o dropout(h*)      (3 classes)

Word vectors are fixed pre-trained GloVe (``freeze``); dropout is applied to the embeddings and to h*.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class ConditionalAttentionNLI(nn.Module):
    def __init__(self, embedding: torch.Tensor, attention: nn.Module, hidden: int = 100, dropout: float = 0.1,
                 freeze: bool = True, n_classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(embedding, freeze=freeze, padding_idx=0)
        dim = embedding.shape[1]
        self.drop = nn.Dropout(dropout)
        self.premise_rnn = nn.GRU(dim, hidden, batch_first=True)
        self.hypothesis_rnn = nn.GRU(dim, hidden, batch_first=True)
        self.W_y = nn.Linear(hidden, hidden, bias=False)
        self.W_h = nn.Linear(hidden, hidden, bias=False)
        self.w = nn.Linear(hidden, 1, bias=False)
        self.W_p = nn.Linear(hidden, hidden, bias=False)
        self.W_x = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, n_classes)
        self.attention = attention

    def encode(self, rnn: nn.GRU, tokens: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor | None = None):
        x = self.drop(self.embed(tokens))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h = rnn(packed, h0)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out, h  # (B, T, H), (1, B, H)

    def forward(self, premise, premise_len, hypothesis, hypothesis_len, return_attention: bool = False):
        Y, h_premise = self.encode(self.premise_rnn, premise, premise_len)
        _, h_hyp = self.encode(self.hypothesis_rnn, hypothesis, hypothesis_len, h0=h_premise)
        h_n = h_hyp[0]                                                     # (B, H)
        M = torch.tanh(self.W_y(Y) + self.W_h(h_n).unsqueeze(1))          # (B, T, H)
        scores = self.w(M).squeeze(-1)                                     # (B, T)
        mask = torch.arange(premise.shape[1], device=premise.device)[None, :] < premise_len[:, None]
        alpha = self.attention(scores, mask=mask)                          # (B, T), zero on padding
        r = torch.bmm(alpha.unsqueeze(1), Y).squeeze(1)                    # (B, H)
        h_star = torch.tanh(self.W_p(r) + self.W_x(h_n))
        logits = self.out(self.drop(h_star))
        return (logits, alpha, mask, scores) if return_attention else logits
