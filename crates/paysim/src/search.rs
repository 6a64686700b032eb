//! The subset of Stripe's search query language that payment intents support.
//!
//! A query is up to 10 clauses joined by `AND`, `OR` (not both) or spaces
//! (meaning `AND`). A clause is `field:value` (exact match, case-insensitive),
//! or for numbers `field>value`, `<`, `>=`, `<=`; a leading `-` negates it.
//! Fields: `amount`, `created`, `currency`, `customer`, `status` and
//! `metadata['key']`. Values are quoted with `'` or `"` (backslash escapes the
//! quote); numbers may be bare.

use crate::state::PaymentIntent;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    clauses: Vec<Clause>,
    any: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Amount,
    Created,
    Currency,
    Customer,
    Status,
    Metadata(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    negate: bool,
    field: Field,
    op: Op,
    value: String,
}

const MAX_CLAUSES: usize = 10;

impl Query {
    /// Parses `text`; the error says what is wrong, for an `invalid_request_error`.
    pub(crate) fn parse(text: &str) -> Result<Query, String> {
        let mut p = Parser {
            chars: text.chars().collect(),
            at: 0,
        };
        let mut clauses = Vec::new();
        let mut conj: Option<bool> = None; // Some(true) = OR
        loop {
            p.skip_ws();
            if p.done() {
                break;
            }
            if !clauses.is_empty() {
                let had_space = p.at > 0 && p.chars[p.at - 1].is_whitespace();
                let keyword = p.keyword();
                if keyword.is_none() && !had_space {
                    return Err(format!("unexpected character at position {}", p.at));
                }
                let or = keyword == Some(true);
                if conj.is_some_and(|c| c != or) {
                    return Err("AND and OR cannot be combined in one query".into());
                }
                conj = Some(or);
                p.skip_ws();
            }
            clauses.push(p.clause()?);
            if clauses.len() > MAX_CLAUSES {
                return Err(format!("a query has at most {MAX_CLAUSES} clauses"));
            }
        }
        if clauses.is_empty() {
            return Err("the query is empty".into());
        }
        Ok(Query {
            clauses,
            any: conj == Some(true),
        })
    }

    /// Whether `pi` matches.
    pub(crate) fn matches(&self, pi: &PaymentIntent) -> bool {
        let mut each = self.clauses.iter().map(|c| c.matches(pi));
        if self.any {
            each.any(|m| m)
        } else {
            each.all(|m| m)
        }
    }
}

impl Clause {
    fn matches(&self, pi: &PaymentIntent) -> bool {
        let text =
            |s: Option<&str>| s.is_some_and(|s| s.to_lowercase() == self.value.to_lowercase());
        let number = |n: i64| {
            let Ok(v) = self.value.parse::<i64>() else {
                return false;
            };
            match self.op {
                Op::Eq => n == v,
                Op::Gt => n > v,
                Op::Lt => n < v,
                Op::Ge => n >= v,
                Op::Le => n <= v,
            }
        };
        let m = match &self.field {
            Field::Amount => number(pi.amount),
            Field::Created => number(pi.created),
            Field::Currency => text(Some(&pi.currency)),
            Field::Customer => text(pi.customer.as_deref()),
            Field::Status => text(Some(pi.status.as_str())),
            Field::Metadata(k) => text(pi.metadata.get(k).map(String::as_str)),
        };
        m != self.negate
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// `AND` / `OR` (any case) followed by a space: Some(is_or).
    fn keyword(&mut self) -> Option<bool> {
        for (word, or) in [("and", false), ("or", true)] {
            let end = self.at + word.len();
            if end < self.chars.len()
                && self.chars[end].is_whitespace()
                && self.chars[self.at..end]
                    .iter()
                    .collect::<String>()
                    .eq_ignore_ascii_case(word)
            {
                self.at = end;
                return Some(or);
            }
        }
        None
    }

    fn clause(&mut self) -> Result<Clause, String> {
        let negate = self.peek() == Some('-');
        if negate {
            self.at += 1;
        }
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.at += 1;
        }
        let name: String = self.chars[start..self.at].iter().collect();
        let field = match name.as_str() {
            "amount" => Field::Amount,
            "created" => Field::Created,
            "currency" => Field::Currency,
            "customer" => Field::Customer,
            "status" => Field::Status,
            "metadata" => {
                if self.peek() != Some('[') {
                    return Err("metadata must be followed by ['key']".into());
                }
                self.at += 1;
                let key = self.quoted()?;
                if self.peek() != Some(']') {
                    return Err("metadata['key'] is missing its ']'".into());
                }
                self.at += 1;
                Field::Metadata(key)
            }
            "" => return Err(format!("expected a field at position {start}")),
            other => return Err(format!("the field '{other}' is not supported")),
        };
        let op = match (self.peek(), self.chars.get(self.at + 1).copied()) {
            (Some(':'), _) => {
                self.at += 1;
                Op::Eq
            }
            (Some('>'), Some('=')) => {
                self.at += 2;
                Op::Ge
            }
            (Some('<'), Some('=')) => {
                self.at += 2;
                Op::Le
            }
            (Some('>'), _) => {
                self.at += 1;
                Op::Gt
            }
            (Some('<'), _) => {
                self.at += 1;
                Op::Lt
            }
            _ => {
                return Err(format!(
                    "expected ':', '>', '<', '>=' or '<=' after '{name}'"
                ))
            }
        };
        let numeric = matches!(field, Field::Amount | Field::Created);
        if op != Op::Eq && !numeric {
            return Err(format!("'{name}' supports only ':'"));
        }
        let value = match self.peek() {
            Some('\'') | Some('"') => self.quoted()?,
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| !c.is_whitespace()) {
                    self.at += 1;
                }
                self.chars[start..self.at].iter().collect()
            }
        };
        if value.is_empty() {
            return Err(format!("'{name}' has no value"));
        }
        if numeric && value.parse::<i64>().is_err() {
            return Err(format!("'{name}' needs an integer, got '{value}'"));
        }
        Ok(Clause {
            negate,
            field,
            op,
            value,
        })
    }

    fn quoted(&mut self) -> Result<String, String> {
        let Some(quote) = self.peek().filter(|c| *c == '\'' || *c == '"') else {
            return Err(format!("expected a quoted string at position {}", self.at));
        };
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some('\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_settlers_query() {
        let q = Query::parse("metadata['command_id']:'0f6c-1'").expect("parse");
        assert_eq!(
            q.clauses,
            vec![Clause {
                negate: false,
                field: Field::Metadata("command_id".into()),
                op: Op::Eq,
                value: "0f6c-1".into()
            }]
        );
        assert!(!q.any);
    }

    #[test]
    fn parses_conjunctions_and_numbers() {
        let q =
            Query::parse(r#"customer:"cus_1" AND amount>=100 status:'succeeded'"#).expect("parse");
        assert_eq!(q.clauses.len(), 3);
        assert_eq!(q.clauses[1].op, Op::Ge);
        let q = Query::parse("status:'succeeded' or -currency:'usd'").expect("parse");
        assert!(q.any);
        assert!(q.clauses[1].negate);
    }

    #[test]
    fn rejects_bad_queries() {
        for bad in [
            "",
            "metadata:'x'",
            "metadata['x':'y'",
            "nope:'x'",
            "status>'x'",
            "amount>abc",
            "status:'a' AND status:'b' OR status:'c'",
            "status:'unterminated",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
    }
}
