//! Label selectors: the string form (`app=web,tier in (fe,be),!canary`) and
//! `meta/v1 LabelSelector` (`matchLabels` + `matchExpressions`), parsed into one
//! [`Selector`] that matches label sets with Kubernetes' semantics.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::validation::names;

/// Why a selector could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(String);

/// How a requirement compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `key in (a,b)`, `key=a`, `key==a`: the label is set to one of the values.
    In,
    /// `key notin (a,b)`, `key!=a`: the label is unset or set to another value.
    NotIn,
    /// `key`: the label is set.
    Exists,
    /// `!key`: the label is unset.
    DoesNotExist,
    /// `key>3`: the label is an integer greater than the value.
    GreaterThan,
    /// `key<3`: the label is an integer less than the value.
    LessThan,
}

/// One condition on one label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// The values compared with, sorted and deduplicated (empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key and values like Kubernetes' `NewRequirement`.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        if let Some(msg) = names::qualified_name(key).into_iter().next() {
            return Err(SelectorError(format!("key {key:?}: {msg}")));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError(
                    "for 'in', 'notin' operators, values set can't be empty".to_owned(),
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError(
                    "values set must be empty for exists and does not exist".to_owned(),
                ));
            }
            Operator::GreaterThan | Operator::LessThan
                if (values.len() != 1 || values[0].parse::<i64>().is_err()) =>
            {
                return Err(SelectorError(format!(
                    "for 'Gt', 'Lt' operators, exactly one integer value is required, got {values:?}"
                )));
            }
            _ => {}
        }
        for value in &values {
            if let Some(msg) = names::label_value(value).into_iter().next() {
                return Err(SelectorError(format!("values[{value:?}]: {msg}")));
            }
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(actual)), Some(Ok(bound))) = (
                    value.map(|v| v.parse::<i64>()),
                    self.values.first().map(|v| v.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let single = self.values.len() == 1;
        match self.operator {
            Operator::In if single => write!(f, "{key}={}", self.values[0]),
            Operator::NotIn if single => write!(f, "{key}!={}", self.values[0]),
            Operator::In => write!(f, "{key} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::GreaterThan => write!(f, "{key}>{}", self.values[0]),
            Operator::LessThan => write!(f, "{key}<{}", self.values[0]),
        }
    }
}

/// A conjunction of requirements. The empty selector matches everything; a selector
/// built from an absent `LabelSelector` matches nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    matches_nothing: bool,
}

impl Selector {
    /// The selector that matches every label set.
    pub fn everything() -> Self {
        Self {
            requirements: Vec::new(),
            matches_nothing: false,
        }
    }

    /// The selector that matches no label set (Kubernetes' `labels.Nothing()`).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            matches_nothing: true,
        }
    }

    /// Parses the string form used by `-l` and `?labelSelector=`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).parse()
    }

    /// Converts a `LabelSelector` as Kubernetes' `LabelSelectorAsSelector` does: `None`
    /// matches nothing, an empty selector matches everything.
    pub fn from_label_selector(selector: Option<&LabelSelector>) -> Result<Self, SelectorError> {
        let Some(selector) = selector else {
            return Ok(Self::nothing());
        };
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(key, Operator::In, vec![value.clone()])?);
        }
        for expression in selector.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expression.key, operator, values)?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// A selector from requirements, kept sorted by key like Kubernetes' `internalSelector`.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            matches_nothing: false,
        }
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.matches_nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector matches everything.
    pub fn is_everything(&self) -> bool {
        !self.matches_nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Greater,
    Less,
    OpenParen,
    CloseParen,
    Comma,
    End,
}

impl Token {
    /// The token as a key or value: identifiers, and the keywords `in`/`notin` outside
    /// the operator position (Kubernetes reads them as plain words there).
    fn as_word(&self) -> Option<String> {
        match self {
            Token::Identifier(word) => Some(word.clone()),
            Token::In => Some("in".to_owned()),
            Token::NotIn => Some("notin".to_owned()),
            _ => None,
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Token::Identifier(s) => s.as_str(),
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Greater => ">",
            Token::Less => "<",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::End => "",
        };
        write!(f, "'{text}'")
    }
}

fn tokenize(input: &str) -> Vec<Token> {
    // Kubernetes' lexer separates on ASCII blanks only (space, tab, CR, LF).
    let blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let special = |c: char| blank(c) || "!=<>(),".contains(c);
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let token = match c {
            c if blank(c) => continue,
            '(' => Token::OpenParen,
            ')' => Token::CloseParen,
            ',' => Token::Comma,
            '>' => Token::Greater,
            '<' => Token::Less,
            '!' if chars.next_if(|&(_, c)| c == '=').is_some() => Token::NotEquals,
            '!' => Token::Bang,
            '=' if chars.next_if(|&(_, c)| c == '=').is_some() => Token::DoubleEquals,
            '=' => Token::Equals,
            _ => {
                let mut end = start + c.len_utf8();
                while let Some(&(idx, next)) = chars.peek() {
                    if special(next) {
                        break;
                    }
                    end = idx + next.len_utf8();
                    chars.next();
                }
                match &input[start..end] {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    word => Token::Identifier(word.to_owned()),
                }
            }
        };
        tokens.push(token);
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Self {
            tokens: tokenize(input),
            position: 0,
        }
    }

    fn peek(&self) -> &Token {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.position += 1;
        token
    }

    fn unexpected(found: &Token, expected: &str) -> SelectorError {
        SelectorError(format!("found {found}, expected: {expected}"))
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if *self.peek() == Token::End {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                Token::End => break,
                Token::Comma if *self.peek() != Token::End => {}
                found => return Err(Self::unexpected(&found, "',' or 'end of string'")),
            }
        }
        Ok(Selector::from_requirements(requirements))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = *self.peek() == Token::Bang;
        if negated {
            self.next();
        }
        let found = self.next();
        let Some(key) = found.as_word() else {
            return Err(Self::unexpected(&found, "identifier"));
        };
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        let operator = match self.peek() {
            Token::End | Token::Comma => {
                return Requirement::new(&key, Operator::Exists, Vec::new());
            }
            Token::Equals | Token::DoubleEquals => Operator::In,
            Token::NotEquals => Operator::NotIn,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            found => return Err(Self::unexpected(found, "'=', '!=', '==', 'in', notin'")),
        };
        let set_based = matches!(self.next(), Token::In | Token::NotIn);
        let values = if set_based {
            self.value_set()?
        } else {
            vec![self.single_value()?]
        };
        Requirement::new(&key, operator, values)
    }

    fn single_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            token @ (Token::Identifier(_) | Token::In | Token::NotIn) => {
                let value = token.as_word().unwrap_or_default();
                self.next();
                Ok(value)
            }
            // `key=` selects the empty value, as in Kubernetes.
            Token::End | Token::Comma => Ok(String::new()),
            found => Err(Self::unexpected(found, "identifier")),
        }
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let found = self.next();
        if found != Token::OpenParen {
            return Err(Self::unexpected(&found, "'('"));
        }
        let mut values = Vec::new();
        if *self.peek() == Token::CloseParen {
            // `in ()` is the set holding the empty value, as in Kubernetes.
            self.next();
            return Ok(vec![String::new()]);
        }
        loop {
            // `in (a,)` and `in (,a)` carry an empty value, as in Kubernetes.
            match self.peek() {
                token @ (Token::Identifier(_) | Token::In | Token::NotIn) => {
                    values.push(token.as_word().unwrap_or_default());
                    self.next();
                }
                Token::Comma | Token::CloseParen => values.push(String::new()),
                found => return Err(Self::unexpected(found, "',', ')' or identifier")),
            }
            match self.next() {
                Token::Comma => {}
                Token::CloseParen => return Ok(values),
                found => return Err(Self::unexpected(&found, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(selector: &str, pairs: &[(&str, &str)], expected: bool) {
        let parsed = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
        assert_eq!(
            parsed.matches(&labels(pairs)),
            expected,
            "{selector:?} against {pairs:?}"
        );
    }

    #[test]
    fn string_form_matches_like_kubernetes() {
        let web_fe = [("app", "web"), ("tier", "fe")];
        check("", &web_fe, true);
        check("app=web", &web_fe, true);
        check("app==web", &web_fe, true);
        check("app!=web", &web_fe, false);
        check("app!=db", &web_fe, true);
        check("missing!=x", &web_fe, true);
        check("app=web,tier in (fe,be),!canary", &web_fe, true);
        check(
            "app=web,tier in (fe,be),!canary",
            &[("app", "web"), ("tier", "fe"), ("canary", "1")],
            false,
        );
        check("tier notin (fe)", &web_fe, false);
        check("tier notin (be)", &web_fe, true);
        check("missing notin (be)", &web_fe, true);
        check("tier", &web_fe, true);
        check("!tier", &web_fe, false);
        check("x in (a,)", &[("x", "")], true);
        check("x=", &[("x", "")], true);
        check("x in ()", &[("x", "")], true);
        check("app=in", &[("app", "in")], true);
        check("x in (in,notin)", &[("x", "notin")], true);
        check("in=x", &[("in", "x")], true);
        check("gen>3", &[("gen", "4")], true);
        check("gen<3", &[("gen", "4")], false);
        check("gen>3", &[("gen", "four")], false);
        check("  app = web ,  tier  in(fe)", &web_fe, true);
        check("example.com/app=web", &[("example.com/app", "web")], true);
    }

    #[test]
    fn bad_selectors_are_refused_with_a_reason() {
        for bad in [
            "a in (b", "!!", "a in b", "a=(b)", ",", "a,", "a b", "=a", "a=b=c", "-a=b", "a=-b",
            "a>b", "a notin",
        ] {
            let error = Selector::parse(bad).expect_err(bad);
            assert!(
                error
                    .to_string()
                    .starts_with("unable to parse requirement: "),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            Selector::parse("a in (b").unwrap_err().to_string(),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
    }

    #[test]
    fn string_form_round_trips() {
        for text in [
            "app=web",
            "!canary",
            "tier in (be,fe)",
            "a notin (x,y)",
            "gen>3",
        ] {
            assert_eq!(Selector::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Selector::parse("z=1,a=2").unwrap().to_string(), "a=2,z=1");
    }

    #[test]
    fn label_selector_objects() {
        assert!(
            !Selector::from_label_selector(None)
                .unwrap()
                .matches(&labels(&[]))
        );
        let empty = LabelSelector::default();
        assert!(
            Selector::from_label_selector(Some(&empty))
                .unwrap()
                .matches(&labels(&[("a", "b")]))
        );
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into(), "be".into()]),
            }]),
        };
        let selector = Selector::from_label_selector(Some(&selector)).unwrap();
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "be")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert_eq!(selector.to_string(), "app=web,tier in (be,fe)");
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Like".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            Selector::from_label_selector(Some(&bad))
                .unwrap_err()
                .to_string(),
            "unable to parse requirement: \"Like\" is not a valid label selector operator"
        );
    }
}
