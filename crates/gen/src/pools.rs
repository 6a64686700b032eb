//! Static word pools the generator draws from: phrases per language, emoji,
//! names, places, sites and the words catalog hashtags are made of.
//!
//! Phrases are raw text (not JSON-escaped). Everything that ends up in a
//! tweet's `text` is as Twitter writes it, so `&`, `<`, `>` appear only as
//! `&amp;`, `&lt;`, `&gt;` and only in [`AMP`].

/// English phrases: the bulk of the stream.
pub(crate) const EN: &[&str] = &[
    "just finished my morning run",
    "can't believe it's already June",
    "best coffee in town, no contest",
    "anyone else watching the game tonight?",
    "new blog post is up",
    "this is the way",
    "so many meetings today",
    "happy birthday to my favorite person",
    "what a game!",
    "the new season is finally out",
    "hot take: pineapple belongs on pizza",
    "I need a vacation",
    "traffic is insane right now",
    "who's going to the concert on Friday?",
    "shipping the new release today",
    "that's a wrap on another week",
    "weekend plans: absolutely nothing",
    "my cat knocked over my coffee again",
    "honestly the best movie of the year",
    "can someone explain this to me",
    "loving the weather today",
    "thread below",
    "rain again, of course",
    "first day at the new job!",
    "reading a great book about distributed systems",
    "the deploy went fine, surprisingly",
    "who else is up this early?",
    "lunch was amazing",
    "going live in 10 minutes",
    "this song has been on repeat all day",
    "tickets are sold out already?!",
    "proud of this team",
    "never skipping leg day again",
    "it's giving main character energy",
    "we're hiring engineers, DM me",
    "just saw the trailer and wow",
    "the playoffs start tomorrow",
    "late night coding session",
    "dinner with the fam",
    "forgot my umbrella, classic",
    "new personal best at the gym today",
    "finally booked the trip",
    "hot chocolate season is back",
    "the airport wifi is a crime",
    "back home after a long trip",
    "my plants are thriving",
    "low-key the best day this month",
    "currently stuck in a meeting that could have been an email",
    "tried a new recipe tonight",
    "kids are finally asleep",
    "happy Friday everyone",
    "thanks for all the birthday wishes",
    "can't stop laughing at this",
    "the sunset tonight was unreal",
    "we did it!!!",
    "one more episode and then bed, I promise",
    "who needs sleep anyway",
    "big announcement coming soon",
    "today's vibe",
    "no thoughts, just vibes",
    "that's it, that's the tweet",
    "unpopular opinion: mondays are fine",
    "the queue for brunch is an hour long",
    "my team lost again, I'm fine",
    "packing for the weekend",
    "listening to the new album right now",
    "woke up to snow in June??",
    "customer service was actually great today",
    "does anyone have a charger I can borrow",
    "started learning Rust this week",
    "the build is green, time for lunch",
    "my dog has more followers than me",
    "grateful for this community",
    "streaming again tonight",
    "shoutout to the bus driver who waited for me",
    "need recommendations for a good podcast",
    "I have so many tabs open",
    "the new update broke everything",
    "ok this is actually hilarious",
    "cleaning my apartment instead of working",
    "just hit 1000 followers, thank you",
    "the match went to penalties",
    "farmers market haul",
    "can we talk about that ending",
    "learning to bake bread",
    "long day, short tweet",
    "power outage in my neighborhood",
    "coffee first, questions later",
    "if you know, you know",
    "this aged well",
    "the group chat is unhinged today",
    "my flight got delayed three hours",
    "moving apartments this weekend, send help",
    "the new phone camera is ridiculous",
    "can't wait for summer break",
    "spent the whole day at the beach",
    "why is it so hard to find a good taco",
    "I'm not crying, you're crying",
    "the library is my happy place",
    "trying to drink more water",
];

/// Spanish phrases.
pub(crate) const ES: &[&str] = &[
    "buenos días a todos",
    "qué partidazo",
    "no puedo más con este calor",
    "mañana empiezo la dieta",
    "la mejor paella de mi vida",
    "vamos con todo",
    "feliz cumpleaños, hermano",
    "¿alguien sabe qué pasó?",
    "estoy muy cansado hoy",
    "qué canción tan bonita",
    "a la playa este fin de semana",
    "el café de la mañana",
    "nos vemos en Madrid",
    "la película estuvo increíble",
    "año nuevo, vida nueva",
    "¡qué golazo!",
];

/// Portuguese phrases.
pub(crate) const PT: &[&str] = &[
    "bom dia, gente",
    "que jogo incrível",
    "saudade de casa",
    "não aguento mais esse calor",
    "vamos que vamos",
    "hoje é dia de praia",
    "o melhor pão de queijo de São Paulo",
    "parabéns, mãe",
    "alguém viu isso?",
    "estou apaixonada por essa música",
    "amanhã tem show",
];

/// French phrases.
pub(crate) const FR: &[&str] = &[
    "bonjour tout le monde",
    "quelle journée",
    "le café est prêt",
    "on se voit ce soir ?",
    "j'adore cette chanson",
    "vivement le week-end",
    "c'est déjà l'été",
    "la crème brûlée était parfaite",
    "bon appétit",
    "à demain",
    "très bonne nouvelle",
];

/// Japanese phrases (no spaces, as Japanese is written).
pub(crate) const JA: &[&str] = &[
    "今日はいい天気ですね",
    "ありがとうございます",
    "新しいスニーカーを買った",
    "お疲れ様でした",
    "明日から夏休み",
    "ラーメン食べたい",
    "東京は暑いです",
    "週末は家でゆっくり",
    "この曲めっちゃ好き",
    "おはようございます",
    "今日も一日頑張ろう",
    "猫がかわいすぎる",
    "やっと終わった",
    "コーヒー飲みながら作業中",
    "新宿で友達とランチ",
    "映画最高だった",
    "雨が止まない",
    "眠い…",
    "ライブ楽しかった！",
    "電車が遅れてる",
];

/// Chinese phrases.
pub(crate) const ZH: &[&str] = &[
    "今天天气很好",
    "我喜欢这个",
    "你好世界",
    "周末快乐",
    "这部电影太好看了",
    "终于下班了",
    "早上好",
    "好想去旅行",
    "谢谢大家",
    "加油！",
    "新年快乐",
];

/// Accented Latin words mixed into English text.
pub(crate) const ACCENTED: &[&str] = &[
    "café",
    "naïve",
    "jalapeño",
    "crème brûlée",
    "über",
    "déjà vu",
    "piñata",
    "Zürich",
    "Kraków",
    "smörgåsbord",
    "São Paulo",
    "résumé",
    "façade",
    "Ångström",
    "Øresund",
    "fiancée",
    "açaí bowl",
];

/// What shoppers write around a purchase hashtag.
pub(crate) const PURCHASE: &[&str] = &[
    "just ordered",
    "take my money!",
    "had to get these",
    "treat yourself",
    "buying this right now",
    "gift for my sister",
    "finally!",
    "can't wait for it to arrive",
    "ordering two",
    "ok fine, you win",
    "payday",
    "been waiting all month for this drop",
    "adding to cart",
    "birthday present sorted",
    "couldn't resist",
    "yes please",
    "this one's for me",
    "worth it",
    "in",
    "need this",
    "comprando ahora",
    "je prends !",
    "買います",
    "ポチった",
    "these are mine now",
    "my wallet is crying but",
];

/// Text with HTML entities as Twitter writes them; placed only after the
/// last entity of a tweet, so entity indices never depend on how a reader
/// counts `&amp;`.
pub(crate) const AMP: &[&str] = &[
    "rock &amp; roll",
    "Q&amp;A at 5pm",
    "mac &amp; cheese tonight",
    "salt &amp; pepper",
    "&lt;3",
    "AT&amp;T is down again",
    "R&amp;D day",
    "x &gt; y, obviously",
    "P&amp;L looks good",
    "&lt;&lt; this",
];

/// Emoji, including astral-plane ones, modifiers, ZWJ sequences and flags.
pub(crate) const EMOJI: &[&str] = &[
    "😂",
    "❤️",
    "🔥",
    "😍",
    "🙏",
    "✨",
    "👀",
    "🎉",
    "💯",
    "😭",
    "🥺",
    "👟",
    "☕",
    "🍕",
    "⚽",
    "🇺🇸",
    "🇯🇵",
    "👍🏽",
    "👨‍👩‍👧",
    "🤔",
    "🙌",
    "💪",
    "🌸",
    "😅",
    "🚀",
    "🏳️‍🌈",
    "✅",
    "🤣",
    "😊",
    "🥳",
    "🎶",
    "😴",
    "🌮",
    "🍜",
    "🐶",
];

/// Ordinary hashtags (never catalog hashtags; a few look like them).
pub(crate) const TAGS: &[&str] = &[
    "MondayMotivation",
    "tbt",
    "NowPlaying",
    "coffee",
    "WorldCup2026",
    "rustlang",
    "100DaysOfCode",
    "AI",
    "photography",
    "travel",
    "foodie",
    "NBA",
    "F1",
    "sneakers",
    "BuyNow",
    "ShopSmall",
    "buylocal",
    "developer",
    "giveaway",
    "日本",
    "東京",
    "夏休み",
    "fútbol",
    "café",
    "música",
    "OOTD",
    "ClimateAction",
    "SelfCare",
    "KPop",
    "BTS",
    "art",
    "nature",
    "fitness",
    "Bitcoin",
    "reading",
    "amwriting",
    "WritingCommunity",
    "gamedev",
    "indiedev",
    "python",
    "javascript",
    "Throwback_Thursday",
    "sale",
    "SummerVibes",
    "精神",
    "Eurovision",
    "StarWars",
    "TGIF",
];

/// Cashtags for `entities.symbols`.
pub(crate) const CASHTAGS: &[&str] = &["AAPL", "TSLA", "BTC", "NVDA", "AMZN", "ETH", "GME"];

/// Given names: (display, ASCII handle base).
pub(crate) const FIRST: &[(&str, &str)] = &[
    ("Sarah", "sarah"),
    ("Mike", "mike"),
    ("Jessica", "jess"),
    ("David", "david"),
    ("Emily", "emily"),
    ("Chris", "chris"),
    ("Ashley", "ashley"),
    ("Matt", "matt"),
    ("Olivia", "olivia"),
    ("James", "james"),
    ("Sophia", "sophia"),
    ("Daniel", "dan"),
    ("Emma", "emma"),
    ("Ryan", "ryan"),
    ("Chloe", "chloe"),
    ("Kevin", "kevin"),
    ("Grace", "grace"),
    ("Tom", "tom"),
    ("Hannah", "hannah"),
    ("Alex", "alex"),
    ("José", "jose"),
    ("María", "maria"),
    ("Lucía", "lucia"),
    ("Sebastián", "sebas"),
    ("Zoë", "zoe"),
    ("Björn", "bjorn"),
    ("François", "francois"),
    ("Łukasz", "lukasz"),
    ("Ana", "ana"),
    ("João", "joao"),
    ("Søren", "soren"),
    ("Mateo", "mateo"),
    ("Camila", "camila"),
    ("Valentina", "vale"),
    ("Diego", "diego"),
    ("Yuki", "yuki"),
    ("Haruto", "haruto"),
    ("さくら", "sakura"),
    ("ゆうき", "yuuki"),
    ("太郎", "taro"),
    ("花子", "hanako"),
    ("小明", "xiaoming"),
    ("李娜", "lina"),
    ("Wei", "wei"),
    ("Priya", "priya"),
    ("Arjun", "arjun"),
    ("Fatima", "fatima"),
    ("Omar", "omar"),
    ("Aisha", "aisha"),
    ("Noah", "noah"),
    ("Liam", "liam"),
    ("Mia", "mia"),
    ("Ethan", "ethan"),
    ("Ava", "ava"),
    ("Lucas", "lucas"),
    ("Isabella", "bella"),
    ("Leo", "leo"),
    ("Nina", "nina"),
    ("Kai", "kai"),
    ("Maya", "maya"),
    ("Jin", "jin"),
    ("Minji", "minji"),
];

/// Family names: (display, ASCII handle base).
pub(crate) const LAST: &[(&str, &str)] = &[
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("García", "garcia"),
    ("Müller", "muller"),
    ("Tanaka", "tanaka"),
    ("Sato", "sato"),
    ("Kim", "kim"),
    ("Nguyen", "nguyen"),
    ("Rossi", "rossi"),
    ("Dubois", "dubois"),
    ("Silva", "silva"),
    ("Kowalski", "kowalski"),
    ("Patel", "patel"),
    ("O'Brien", "obrien"),
    ("Brown", "brown"),
    ("Lee", "lee"),
    ("Wang", "wang"),
    ("Chen", "chen"),
    ("López", "lopez"),
    ("Hernández", "hernandez"),
    ("Ivanova", "ivanova"),
    ("Andersson", "andersson"),
    ("Novak", "novak"),
    ("Yılmaz", "yilmaz"),
    ("Costa", "costa"),
    ("Park", "park"),
    ("Walker", "walker"),
    ("Martin", "martin"),
    ("Fischer", "fischer"),
    ("Jensen", "jensen"),
    ("Okafor", "okafor"),
    ("Haddad", "haddad"),
];

/// Words people add to a display name.
pub(crate) const NAME_EXTRA: &[&str] = &[
    "she/her",
    "he/him",
    "they/them",
    "official",
    "🌸",
    "🏳️‍🌈",
    "✈️",
    "📚",
    "🦀",
    "⚽",
    "🎮",
];

/// Profile descriptions; some carry `#` words and `@` names, which are not
/// tweet entities and must never be read as purchase hashtags. On lines
/// that must hold no hashtag sign they are rendered without their `#`.
pub(crate) const DESCRIPTIONS: &[&str] = &[
    "Software developer. Coffee lover. #developer #rustlang",
    "Mom of 3 | runner 🏃‍♀️ | she/her",
    "東京在住。カメラが好き。",
    "Views are my own.",
    "Making things on the internet since 2009",
    "Sneakerhead 👟 #sneakers #OOTD",
    "Product designer @ a startup you haven't heard of",
    "\"Stay hungry, stay foolish\"",
    "Football, food and films.\nLondon ➡️ Lisbon",
    "Writer. Reader. Chronic overthinker. #amwriting",
    "Periodista. Opiniones propias.",
    "Étudiante en médecine 🩺",
    "Tweets about data, databases & distributed systems",
    "Just here for the memes",
    "Photographer 📷 | Available for bookings",
    "NBA, NFL and everything in between",
    "Professional napper",
    "Official account of a very good dog 🐶",
    "Building in public. #buildinpublic #indiedev",
    "Música, café y buenos momentos ☕",
    "Gamer, streamer, snack enthusiast 🎮",
    "Plant parent 🌿 | #SelfCare",
    "Proud #BuyLocal supporter",
    "ラーメンとゲームが好きです",
    "喜欢旅行和美食",
    "Crypto since 2013. Not financial advice. $BTC",
    "Runner, reader, recovering perfectionist",
    "Ex-@bigcorp, now doing my own thing",
    "",
];

/// Profile locations; `None` is JSON null.
pub(crate) const LOCATIONS: &[Option<&str>] = &[
    None,
    None,
    None,
    Some(""),
    Some("San Francisco, CA"),
    Some("New York, NY"),
    Some("London, England"),
    Some("Los Angeles, CA"),
    Some("Toronto, Ontario"),
    Some("東京"),
    Some("大阪市"),
    Some("São Paulo, Brasil"),
    Some("México"),
    Some("Madrid, España"),
    Some("Paris, France"),
    Some("München, Deutschland"),
    Some("Lagos, Nigeria"),
    Some("Mumbai, India"),
    Some("Seoul, Republic of Korea"),
    Some("Sydney, New South Wales"),
    Some("Berlin"),
    Some("Earth"),
    Some("the internet"),
    Some("she/her"),
    Some("Chicago, IL"),
    Some("Austin, TX"),
    Some("Dublin City, Ireland"),
    Some("Kraków, Polska"),
    Some("上海"),
    Some("Buenos Aires, Argentina"),
];

/// Tweet sources, already JSON-escaped the way Twitter writes them.
pub(crate) const SOURCES: &[&str] = &[
    r#""<a href=\"http:\/\/twitter.com\/download\/iphone\" rel=\"nofollow\">Twitter for iPhone<\/a>""#,
    r#""<a href=\"http:\/\/twitter.com\/download\/android\" rel=\"nofollow\">Twitter for Android<\/a>""#,
    r#""<a href=\"https:\/\/mobile.twitter.com\" rel=\"nofollow\">Twitter Web App<\/a>""#,
    r#""<a href=\"https:\/\/about.twitter.com\/products\/tweetdeck\" rel=\"nofollow\">TweetDeck<\/a>""#,
    r#""<a href=\"http:\/\/instagram.com\" rel=\"nofollow\">Instagram<\/a>""#,
    r#""<a href=\"https:\/\/www.hootsuite.com\" rel=\"nofollow\">Hootsuite Inc.<\/a>""#,
    r#""<a href=\"https:\/\/buffer.com\" rel=\"nofollow\">Buffer<\/a>""#,
    r#""<a href=\"https:\/\/ifttt.com\" rel=\"nofollow\">IFTTT<\/a>""#,
    r#""<a href=\"http:\/\/twitter.com\/#!\/download\/ipad\" rel=\"nofollow\">Twitter for iPad<\/a>""#,
];

/// Twitter for iPad's source (the one [`SOURCES`] entry holding a hashtag
/// sign) without its `#!`, in the form of the iPhone's and Android's, for
/// the lines that must hold no sign at all.
const IPAD_SOURCE_WITHOUT_SIGN: &str =
    r#""<a href=\"http:\/\/twitter.com\/download\/ipad\" rel=\"nofollow\">Twitter for iPad<\/a>""#;

/// Source `i` of [`SOURCES`] (cycled); for a line that must hold no sign
/// (`plain`), the iPad's without its `#!`.
pub(crate) fn source(i: usize, plain: bool) -> &'static str {
    let source = SOURCES[i % SOURCES.len()];
    if plain && source.contains('#') {
        IPAD_SOURCE_WITHOUT_SIGN
    } else {
        source
    }
}

/// Link targets: (host, path). Some paths carry a `#fragment` or a query.
pub(crate) const SITES: &[(&str, &str)] = &[
    ("www.youtube.com", "/watch?v="),
    ("open.spotify.com", "/track/"),
    ("www.nytimes.com", "/2026/05/31/technology/"),
    ("github.com", "/hashbuy/"),
    ("www.instagram.com", "/p/"),
    ("www.bbc.co.uk", "/news/world-"),
    ("medium.com", "/@writer/"),
    ("www.twitch.tv", "/"),
    ("www.reddit.com", "/r/rust/comments/"),
    ("www.amazon.com", "/dp/"),
    ("news.ycombinator.com", "/item?id="),
    ("docs.rs", "/serde/latest/serde/#"),
    ("en.wikipedia.org", "/wiki/Caf%C3%A9#"),
    ("ja.wikipedia.org", "/wiki/"),
    ("www.theverge.com", "/2026/6/1/"),
    ("shop.example.com", "/menu#"),
    ("example.com", "/faq#"),
    ("blog.example.org", "/posts/"),
];

/// A place: (id, place_type, name, full_name, country_code, country, lon,
/// lat).
pub(crate) type PlaceRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
);

/// Places for the occasional geotagged tweet.
pub(crate) const PLACES: &[PlaceRow] = &[
    (
        "01a9a39529b27f36",
        "city",
        "Manhattan",
        "Manhattan, NY",
        "US",
        "United States",
        -73.97,
        40.78,
    ),
    (
        "5a110d312052166f",
        "city",
        "San Francisco",
        "San Francisco, CA",
        "US",
        "United States",
        -122.44,
        37.76,
    ),
    (
        "457b4814b4240d87",
        "city",
        "London",
        "London, England",
        "GB",
        "United Kingdom",
        -0.12,
        51.5,
    ),
    (
        "0e3ed0e1b1b8a1a3",
        "city",
        "渋谷区",
        "東京 渋谷区",
        "JP",
        "日本",
        139.70,
        35.66,
    ),
    (
        "68e019afec7d0ba5",
        "city",
        "São Paulo",
        "São Paulo, Brasil",
        "BR",
        "Brasil",
        -46.63,
        -23.55,
    ),
    (
        "09f6a7707f18e0b1",
        "city",
        "Paris",
        "Paris, France",
        "FR",
        "France",
        2.35,
        48.86,
    ),
    (
        "206b8a7ac4a6a8b3",
        "admin",
        "Île-de-France",
        "Île-de-France, France",
        "FR",
        "France",
        2.5,
        48.7,
    ),
    (
        "3797791ff9c0e4c6",
        "city",
        "Toronto",
        "Toronto, Ontario",
        "CA",
        "Canada",
        -79.38,
        43.65,
    ),
];

/// Adjectives of catalog hashtags (`Buy` + adjective + noun + number).
pub(crate) const ADJECTIVES: &[&str] = &[
    "Red",
    "Blue",
    "Green",
    "Black",
    "White",
    "Gold",
    "Silver",
    "Pink",
    "Purple",
    "Orange",
    "Yellow",
    "Classic",
    "Vintage",
    "Retro",
    "Mini",
    "Mega",
    "Super",
    "Ultra",
    "Cozy",
    "Summer",
    "Winter",
    "Spring",
    "Autumn",
    "Limited",
    "Signature",
    "Organic",
    "Fresh",
    "Spicy",
    "Sweet",
    "Wild",
    "Urban",
    "Lucky",
    "Happy",
    "Neon",
    "Velvet",
    "Denim",
    "Wooden",
    "Smart",
    "Tiny",
    "Giant",
    "Deluxe",
    "Premium",
    "Festival",
    "Midnight",
    "Sunny",
    "Rainy",
    "Arctic",
    "Tropical",
    "Golden",
    "Crystal",
];

/// Nouns of catalog hashtags.
pub(crate) const NOUNS: &[&str] = &[
    "Sneakers",
    "Hoodie",
    "Tee",
    "Mug",
    "Cap",
    "Backpack",
    "Socks",
    "Jacket",
    "Poster",
    "Vinyl",
    "Album",
    "Ticket",
    "Burger",
    "Pizza",
    "Taco",
    "Latte",
    "Donut",
    "Cupcake",
    "Candle",
    "Plant",
    "Lamp",
    "Headphones",
    "Speaker",
    "Keyboard",
    "Mouse",
    "Watch",
    "Sunglasses",
    "Scarf",
    "Beanie",
    "Boots",
    "Dress",
    "Jeans",
    "Notebook",
    "Pen",
    "Sticker",
    "Pin",
    "Tote",
    "Bottle",
    "Blanket",
    "Pillow",
    "Book",
    "Comic",
    "Game",
    "Puzzle",
    "Kite",
    "Skateboard",
    "Bike",
    "Helmet",
    "Umbrella",
    "Wallet",
];

/// Accented catalog nouns: (composed as the catalog writes it, the same in
/// decomposed form (NFD, which NFKC folds back), ASCII slug).
pub(crate) const ACCENTED_NOUNS: &[(&str, &str, &str)] = &[
    ("Café", "Cafe\u{301}", "cafe"),
    ("Crème", "Cre\u{300}me", "creme"),
    ("Piñata", "Pin\u{303}ata", "pinata"),
    ("Jalapeño", "Jalapen\u{303}o", "jalapeno"),
    ("Brûlée", "Bru\u{302}le\u{301}e", "brulee"),
    ("Crêpe", "Cre\u{302}pe", "crepe"),
    ("Açaí", "Ac\u{327}ai\u{301}", "acai"),
    ("Pâté", "Pa\u{302}te\u{301}", "pate"),
    ("Soufflé", "Souffle\u{301}", "souffle"),
    ("Müsli", "Mu\u{308}sli", "musli"),
    ("Glühwein", "Glu\u{308}hwein", "gluhwein"),
];

/// Verbs catalog hashtags start with, most often `Buy`.
pub(crate) const VERBS: &[&str] = &["Buy", "Buy", "Buy", "Buy", "Buy", "Buy", "Get", "Order"];

/// Merchant name parts: `<first>-<second>`.
pub(crate) const MERCHANT_A: &[&str] = &[
    "acme",
    "northwind",
    "globex",
    "initech",
    "umbrella",
    "stark",
    "wayne",
    "tyrell",
    "hooli",
    "vandelay",
    "soylent",
    "wonka",
    "oceanic",
    "cyberdyne",
    "aperture",
    "gringotts",
    "monarch",
    "pied-piper",
    "dunder",
    "massive",
];

/// Second merchant name parts.
pub(crate) const MERCHANT_B: &[&str] = &[
    "shoes",
    "apparel",
    "coffee",
    "records",
    "books",
    "outfitters",
    "goods",
    "kitchen",
    "games",
    "supply",
    "market",
    "studio",
    "tickets",
    "bakery",
    "audio",
    "home",
    "sports",
    "toys",
    "tea",
    "optics",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `s` holds a hashtag sign in any spelling a matcher's byte
    /// scan looks for.
    fn has_sign(s: &str) -> bool {
        let lower = s.to_ascii_lowercase();
        ["#", "＃", "\\u0023", "\\uff03"]
            .iter()
            .any(|sign| lower.contains(sign))
    }

    /// A line drawn to hold no sign takes its words, names and places from
    /// these pools as they are: one sign in them would break the share.
    #[test]
    fn pools_that_sign_free_lines_use_as_they_are_hold_no_sign() {
        let words = [EN, ES, PT, FR, JA, ZH, ACCENTED, AMP, EMOJI, NAME_EXTRA];
        for word in words.iter().flat_map(|pool| pool.iter()) {
            assert!(!has_sign(word), "{word:?}");
        }
        for i in 0..SOURCES.len() {
            assert!(!has_sign(source(i, true)), "{:?}", source(i, true));
        }
        for (shown, handle) in FIRST.iter().chain(LAST) {
            assert!(!has_sign(shown) && !has_sign(handle), "{shown:?}");
        }
        for location in LOCATIONS.iter().flatten() {
            assert!(!has_sign(location), "{location:?}");
        }
        for place in PLACES {
            for field in [place.0, place.1, place.2, place.3, place.4, place.5] {
                assert!(!has_sign(field), "{field:?}");
            }
        }
        for (host, _) in SITES {
            assert!(!has_sign(host), "{host:?}");
        }
    }

    /// The sign-free sources are the sources, index for index, less the
    /// `#!` of the old iPad link.
    #[test]
    fn sources_without_sign_match_the_sources() {
        for (i, with) in SOURCES.iter().enumerate() {
            assert_eq!(with.replace("#!\\/", ""), source(i, true));
            assert_eq!(*with, source(i, false));
        }
        assert!(
            SOURCES.iter().any(|s| has_sign(s)),
            "the pool keeps its sign"
        );
    }
}
